"""The job service: a request becomes a spec (spec.py) and a row (store.py); one runner
(runner.py) submits it as a Ray Job (ray_jobs.py), follows its events into the store
(follow.py) and registers its model."""
