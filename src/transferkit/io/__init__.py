"""Files that must survive crashes and be safe to load: atomic writes (`atomic`), the model bundle (`bundle`) and
a run's log file (`logfile`)."""
