"""Running a plan: the runner (episodes x detectors x seeds -> jobs -> records), one job, and the executors
that run jobs in process, in a process pool or on Ray."""
