-- Runs the user joins (`paas run` with stdin, `paas db psql` at a terminal): NULL for jobs whose
-- output is read back line by line, else whether the process gets a TTY. Such a run lives only
-- as long as its connection: one left pending by a restart is ended at start.
ALTER TABLE jobs ADD COLUMN attach_tty INTEGER;
