-- Reserved number: this migration changes nothing.
SELECT 1;
