"""Where an execution context's code runs: a dedicated thread (default) or a child process."""
