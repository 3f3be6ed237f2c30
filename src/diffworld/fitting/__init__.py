"""The fitting core that the agent and the engine share: the update loop, optimizers, number formats, metrics
loggers and the processes of a distributed run."""
