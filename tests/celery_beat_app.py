"""A Celery app whose ``beat_schedule`` holds every kind of entry ``chronod import celery`` meets:
crontabs that convert exactly (one day field restricted; both restricted in whole weeks of the
month), one that cannot (Friday the 13th), intervals as timedelta, number and ``schedule``, solar
events, options and names that are not job names."""

from __future__ import annotations

from datetime import timedelta

from celery import Celery
from celery.schedules import crontab, schedule, solar

app = Celery("beat_sample", broker="memory://")
app.conf.timezone = "Europe/Berlin"
app.conf.beat_schedule = {
    "digest": {
        "task": "reports.tasks.send_digest",
        "schedule": crontab(minute=30, hour=17, day_of_week="fri"),
        "args": (7,),
        "kwargs": {"format": "html"},
        "options": {"queue": "reports", "expires": 300, "priority": 5},
    },
    "every quarter hour": {
        "task": "metrics.tasks.sample",
        "schedule": crontab(minute="*/15"),
    },
    "month start": {
        "task": "billing.tasks.invoice",
        "schedule": crontab(minute=0, hour="6,18", day_of_month="1,15", month_of_year="1-6"),
    },
    "first-monday": {
        "task": "ops.tasks.patch",
        "schedule": crontab(minute=0, hour=3, day_of_week="mon", day_of_month="1-7"),
    },
    "friday-13th": {
        "task": "ops.tasks.superstition",
        "schedule": crontab(minute=0, hour=12, day_of_week=5, day_of_month=13),
    },
    "heartbeat": {"task": "ops.tasks.ping", "schedule": timedelta(seconds=90)},
    "number": {"task": "ops.tasks.ping", "schedule": 30.0},
    "schedule-object": {"task": "ops.tasks.ping", "schedule": schedule(timedelta(hours=1))},
    "lights-on": {
        "task": "home.tasks.lights",
        "schedule": solar("sunset", 52.52, 13.405),
        "args": ["on"],
    },
    "nautical-dawn": {
        "task": "home.tasks.birds",
        "schedule": solar("dawn_nautical", 52.52, 13.405),
    },
    "noon": {"task": "home.tasks.noon", "schedule": solar("solar_noon", 52.52, 13.405)},
    "too-fast": {"task": "ops.tasks.ping", "schedule": 0.5},
    "bad-args": {"task": "ops.tasks.ping", "schedule": 60, "args": [None]},
}
