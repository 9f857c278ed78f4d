"""Training jobs: admission, the worker that trains one job, the executor and the runner."""
