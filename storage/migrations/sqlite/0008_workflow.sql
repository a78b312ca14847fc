-- Support-team workflow (issue 16): a group marked public is a department visitors may choose
-- in the pre-chat form.
ALTER TABLE agent_groups ADD COLUMN public INTEGER NOT NULL DEFAULT 0;
