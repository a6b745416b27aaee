-- Version 4 is reserved for a migration being written on another branch.
-- Migration versions must run 1..n without gaps, so this file holds the
-- number until that branch lands; it is then replaced by the real 0004.
SELECT 1;
