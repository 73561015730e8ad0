"""Files that must survive crashes and be safe to load: atomic writes (`atomic`), content hashes (`hashing`), the
model bundle (`bundle`) and the names of its files (`names`), and a run's log file (`logfile`)."""
