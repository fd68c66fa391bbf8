"""scheduler: fires cron schedules and delayed jobs, exactly once however many replicas run."""
