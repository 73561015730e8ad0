"""Training: the options (`config`), the one loop (`loop`) and its callbacks (`callbacks`), rates and optimizer
(`schedule`), the `Learner` and its recipe (`learner`), resuming (`resume`), and the strategies a run can use
(`strategies`, `run`)."""
