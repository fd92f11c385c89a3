"""The low floor every stage stands on: error types, the one logger and progress, atomic
writes and hashing, facts about the machine.  It imports nothing above it."""
