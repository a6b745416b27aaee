-- The bank's own schema: the types its read model is made of.  A domain
-- outlives the tables that use it, so a projection rebuild (which drops and
-- renames account_summaries) keeps the rule, and the read model refuses to
-- hold a negative balance or hold: a bug that would make one stops the
-- projection loudly instead of serving it.
CREATE DOMAIN bank_cents AS bigint CHECK (VALUE >= 0);
CREATE DOMAIN bank_account_status AS text CHECK (VALUE IN ('open', 'closed'));
