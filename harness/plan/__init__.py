"""Everything checked before any work: task options, detector hyperparameters, and whether the jobs' models
and features fit in memory."""
