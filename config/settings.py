"""Kindred settings, read from the environment (django-environ).

Two modes, chosen by what the environment provides:

* embedded (no ``DATABASE_URL`` / ``REDIS_URL``): SQLite file, a file-based cache
  shared by the machine's processes and Celery tasks executed in-process, so a new
  user can try Kindred with no services;
* production: PostgreSQL (psycopg 3) and Redis (cache and Celery broker).

Every variable is documented in ``.env.example``. Secrets have no default: a missing
``DJANGO_SECRET_KEY`` fails loudly at start.
"""

import os
from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from config.logging_setup import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env (never committed) is read if present; real environment variables win.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _env_list(name: str, default: str = "") -> list[str]:
    """A comma-separated variable; set-but-empty means an empty list."""
    return [
        item.strip() for item in env(name, default=default).split(",") if item.strip()
    ]


DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env("DJANGO_SECRET_KEY")
if not SECRET_KEY.strip():
    # Set but empty (e.g. a .env copied from .env.example): refuse to start rather
    # than fail later at the first signed cookie or password reset.
    raise ImproperlyConfigured("DJANGO_SECRET_KEY is empty: set a long random value.")
ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")
CSRF_TRUSTED_ORIGINS = _env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "accounts",
    "interactions",
    "recommender",
    "registry",
]

MIDDLEWARE = [
    # First: request id, timing, the request log line and latency metrics for
    # every response.
    "config.middleware.RequestContextMiddleware",
    # Member data under /api/v1/ is never kept by shared caches.
    "config.middleware.PrivateApiResponsesMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# A process started for a benchmark names its own URLconf (the endpoint benchmark's
# gunicorn: recommender.benchmarks.urls); everything else serves config.urls.
ROOT_URLCONF = env("DJANGO_ROOT_URLCONF", default="") or "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------
# Set by config/wsgi.py: this process serves web requests (gunicorn).
WEB_PROCESS = bool(os.environ.get("KINDRED_WEB_PROCESS"))
# Longest a web request's SQL statement may run (seconds; 0: no limit), and the
# client-side deadline of its database calls (config.db_deadline), 0 when off.
WEB_STATEMENT_TIMEOUT = env.float("WEB_STATEMENT_TIMEOUT", default=5.0)
WEB_DATABASE_DEADLINE = 0.0
EMBEDDED_DATABASE = not env("DATABASE_URL", default="")
if EMBEDDED_DATABASE:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env("SQLITE_PATH", default="") or str(BASE_DIR / "db.sqlite3"),
            # Writers wait for each other instead of failing with "database is locked";
            # IMMEDIATE takes the write lock at BEGIN, since SQLite ignores
            # SELECT ... FOR UPDATE.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
else:
    DATABASES = {"default": env.db("DATABASE_URL")}
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Django's, minus the health check's round trip on a connection that a
        # request used a moment ago (config/postgresql/base.py).
        DATABASES["default"]["ENGINE"] = "config.postgresql"
    _db_options = DATABASES["default"].setdefault("OPTIONS", {})
    # A server that accepts connections and never answers: psycopg gives up after
    # this long instead of waiting forever (0: wait forever).
    _db_options["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT", default=3)
    if WEB_PROCESS and WEB_STATEMENT_TIMEOUT > 0:
        # Web requests only (commands, Celery and the serving bundle's loads read
        # whole tables): PostgreSQL cancels a statement running longer, and
        # config.db_deadline cuts a connection whose call is still unanswered a
        # second later (a hung server cancels nothing).
        _db_options["options"] = " ".join(
            filter(
                None,
                [
                    _db_options.get("options", ""),
                    f"-c statement_timeout={int(WEB_STATEMENT_TIMEOUT * 1000)}",
                ],
            )
        )
        WEB_DATABASE_DEADLINE = WEB_STATEMENT_TIMEOUT + 1.0
# An optional read replica (a streaming standby of the primary): the recommendation
# read path's bulk reads (the serving member store: every profile and interaction)
# go to it through config.db_routers.ReplicaRouter; every write, and every read
# that must see a write just made (the member's own interactions, the final
# re-check of what is shown, tokens, the registry), stays on the primary. Unset:
# one database.
DATABASE_REPLICA_URL = env("DATABASE_REPLICA_URL", default="")
DATABASE_ROUTERS: list[str] = []
if DATABASE_REPLICA_URL:
    if EMBEDDED_DATABASE:
        raise ImproperlyConfigured(
            "DATABASE_REPLICA_URL needs DATABASE_URL: a replica of a PostgreSQL "
            "primary, not of the embedded SQLite file."
        )
    _replica = env.db("DATABASE_REPLICA_URL")
    _replica["OPTIONS"] = {**_db_options, **_replica.get("OPTIONS", {})}
    if _replica["ENGINE"] == "django.db.backends.postgresql":
        _replica["ENGINE"] = "config.postgresql"
    DATABASES["replica"] = {
        **_replica,
        "CONN_MAX_AGE": DATABASES["default"]["CONN_MAX_AGE"],
        "CONN_HEALTH_CHECKS": True,
    }
    DATABASE_ROUTERS = ["config.db_routers.ReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
_PASSWORD_VALIDATION = "django.contrib.auth.password_validation"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"{_PASSWORD_VALIDATION}.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]

# --- Cache and Celery -----------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="kindred"),
            "TIMEOUT": 300,
            # A Redis that hangs must cost a request at most this long, not the OS
            # connect timeout: the cache is an optimisation, never a dependency.
            "OPTIONS": {
                "socket_connect_timeout": env.float(
                    "REDIS_TIMEOUT_SECONDS", default=0.5
                ),
                "socket_timeout": env.float("REDIS_TIMEOUT_SECONDS", default=0.5),
                # JSON, not pickles: whoever can write to Redis must not be able to
                # run code in the web workers (anything else reads as a miss).
                "serializer": "recommender.cache.JSONSerializer",
            },
        }
    }
    CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="") or REDIS_URL
    CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default="") or REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = False
else:
    # Files on local disk, shared by every process of the machine: gunicorn's
    # workers must see each other's invalidations (a member's edited preferences,
    # a block) and count rate limits together. A cache per process (local memory)
    # served the other worker's stale entry and let each worker count its own
    # throttle. The directory is created private (0700): its pickles are readable
    # and writable only by Kindred's own user.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": env("CACHE_DIR", default="") or str(BASE_DIR / ".cache"),
            "TIMEOUT": 300,
            # Culling lists the directory on every write once this is reached;
            # one entry per member plus throttle and log-in counters.
            "OPTIONS": {"MAX_ENTRIES": env.int("CACHE_MAX_ENTRIES", default=50_000)},
        }
    }
    CELERY_BROKER_URL = "memory://"
    CELERY_RESULT_BACKEND = "cache+memory://"
    # No broker: tasks run in-process, exactly as a worker would run them.
    CELERY_TASK_ALWAYS_EAGER = True
    CELERY_TASK_EAGER_PROPAGATES = True

CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A web process that publishes a task (impressions) while the broker is down must
# fail at once and take its fallback: kombu's default reconnect loop held every
# recommendation request for 6 s (measured with Redis killed). Publishing still
# retries by its own policy, and a worker's consumer reconnects by itself.
CELERY_BROKER_TRANSPORT_OPTIONS = {"max_retries": 0, "socket_connect_timeout": 2}
# Training is long and memory-hungry: its own queue, so it can get its own workers
# and never holds up short tasks.
TRAINING_TASKS = (
    "nightly_pipeline",
    "features_compute",
    "embeddings_train",
    "index_build",
    "ranking_train",
    "models_evaluate",
    "serving_index_refresh",
)
CELERY_TASK_ROUTES = {
    f"recommender.tasks.{name}": {"queue": "training"} for name in TRAINING_TASKS
} | {"recommender.tasks.impressions_flush": {"queue": "celery"}}
IMPRESSIONS_FLUSH_SECONDS = env.float("IMPRESSIONS_FLUSH_SECONDS", default=5.0)
AB_GUARDRAIL_SECONDS = env.float("AB_GUARDRAIL_SECONDS", default=900.0)
CELERY_BEAT_SCHEDULE = {
    "nightly-training": {
        "task": "recommender.tasks.nightly_pipeline",
        "schedule": crontab(
            hour=env.int("NIGHTLY_TRAINING_HOUR", default=3),
            minute=env.int("NIGHTLY_TRAINING_MINUTE", default=0),
        ),
        "options": {"queue": "training"},
    },
    # Impressions buffered in Redis by the request path, drained in bulk
    # (recommender/impressions.py); a tick not picked up in time is dropped, the
    # next one drains what it left.
    "impressions-flush": {
        "task": "recommender.tasks.impressions_flush",
        "schedule": IMPRESSIONS_FLUSH_SECONDS,
        "options": {"queue": "celery", "expires": IMPRESSIONS_FLUSH_SECONDS},
    },
    # Stops an A/B challenger significantly worse than control (recommender.guardrail).
    "ab-guardrail": {
        "task": "recommender.tasks.ab_guardrail_check",
        "schedule": AB_GUARDRAIL_SECONDS,
        "options": {"queue": "celery", "expires": AB_GUARDRAIL_SECONDS},
    },
    # Daily, after the nightly training: old impressions, old embedding rows and
    # the artifacts of versions that can no longer serve (recommender.retention).
    "data-retention": {
        "task": "recommender.tasks.data_retention",
        "schedule": crontab(hour=env.int("DATA_RETENTION_HOUR", default=5), minute=0),
        "options": {"queue": "celery"},
    },
}

# --- Internationalisation and static files --------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env("STATIC_ROOT", default="") or str(BASE_DIR / "staticfiles")
MEDIA_URL = "media/"
MEDIA_ROOT = env("MEDIA_ROOT", default="") or str(BASE_DIR / "media")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Model artifacts (registry.artifacts) live in default storage: MEDIA_ROOT on local
# disk, or an S3-compatible bucket (AWS S3, MinIO, Ceph…) shared by several machines
# with ARTIFACT_STORAGE=s3 (the default once AWS_STORAGE_BUCKET_NAME is set).
# Credentials come from boto3's usual sources (AWS_ACCESS_KEY_ID /
# AWS_SECRET_ACCESS_KEY, an instance role), never from this file.
ARTIFACT_STORAGE = env("ARTIFACT_STORAGE", default="") or (
    "s3" if env("AWS_STORAGE_BUCKET_NAME", default="") else "local"
)
if ARTIFACT_STORAGE == "s3":
    if not env("AWS_STORAGE_BUCKET_NAME", default=""):
        raise ImproperlyConfigured("ARTIFACT_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME.")
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env("AWS_STORAGE_BUCKET_NAME"),
            "endpoint_url": env("AWS_S3_ENDPOINT_URL", default="") or None,
            "region_name": env("AWS_S3_REGION_NAME", default="") or None,
            "addressing_style": env("AWS_S3_ADDRESSING_STYLE", default="") or None,
            "location": env("AWS_LOCATION", default=""),  # key prefix
            "file_overwrite": False,
            "default_acl": None,  # the bucket's policy decides; objects stay private
            # Downloads larger than this spool to a temporary file, not memory.
            "max_memory_size": 64 * 1024 * 1024,
        },
    }
elif ARTIFACT_STORAGE != "local":
    raise ImproperlyConfigured(
        f"ARTIFACT_STORAGE={ARTIFACT_STORAGE!r}: expected 'local' or 's3'."
    )
# Verified local copies of artifacts downloaded from object storage (one file per
# sha256), so a restart or another worker of the machine does not download again.
ARTIFACT_CACHE_DIR = env("ARTIFACT_CACHE_DIR", default="") or str(
    BASE_DIR / ".artifact-cache"
)

# --- REST framework and OpenAPI -------------------------------------------------
# How many reverse proxies (each appending to X-Forwarded-For and setting
# X-Forwarded-Proto) stand between clients and gunicorn. 0: clients connect
# directly, and no forwarded header is believed.
NUM_PROXIES = env.int("NUM_PROXIES", default=0)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # DRF's token, with an end: KINDRED["AUTH_TOKEN_TTL_HOURS"], a password
        # change, or DELETE /api/v1/auth/token/ (log-out).
        "accounts.authentication.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "config.api.StandardPagination",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "DEFAULT_PARSER_CLASSES": ["config.faults.SafeJSONParser"],
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "config.openapi.KindredAutoSchema",
    # Throttles key on the client address: REMOTE_ADDR, or the address the last of
    # NUM_PROXIES trusted proxies appended to X-Forwarded-For. Never the whole
    # client-sent header, which a client can vary to escape every rate limit.
    "NUM_PROXIES": NUM_PROXIES,
    "DEFAULT_THROTTLE_RATES": {
        "signup": env("THROTTLE_SIGNUP", default="20/hour"),
        "token": env("THROTTLE_TOKEN", default="30/minute"),
        "interactions": env("THROTTLE_INTERACTIONS", default="120/minute"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Kindred API",
    "DESCRIPTION": "People-to-people recommendations: profiles, interactions, "
    "matches and two-stage recommendations.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI served from our own static files: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"GenderEnum": "accounts.models.Gender"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.openapi.add_links",
    ],
}
# Request bodies of the API are small JSON documents; refuse anything larger.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=256 * 1024)

# --- CORS -----------------------------------------------------------------------
CORS_ALLOWED_ORIGINS = _env_list("CORS_ALLOWED_ORIGINS")
CORS_ALLOW_ALL_ORIGINS = DEBUG and env.bool("CORS_ALLOW_ALL_IN_DEBUG", default=True)

# --- Security (production) ------------------------------------------------------
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0)
# Only in effect with HSTS seconds > 0; subdomains by default, preload by choice.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool(
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True
)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
# Probes (container healthcheck, load balancer, Prometheus) speak plain http
# inside the network: never redirect them to https.
SECURE_REDIRECT_EXEMPT = [r"^health(/|$)", r"^metrics$"]
# X-Forwarded-Proto says "https" only when our proxy set it; a client talking to
# gunicorn directly could claim it and dodge the https redirect and secure cookies.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if NUM_PROXIES else None
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Kindred --------------------------------------------------------------------
KINDRED = {
    # A like's recommendation context is also looked up in the member's pages
    # still in Redis (shown but not yet flushed to RecommendationLog) this long.
    "IMPRESSIONS_RECENT_SECONDS": env.int("IMPRESSIONS_RECENT_SECONDS", default=120),
    # API tokens stop working this long after log-in (0: never); a password
    # change or a log-out ends them at once.
    "AUTH_TOKEN_TTL_HOURS": env.int("AUTH_TOKEN_TTL_HOURS", default=720),
    # Password guessing against staff accounts (admin login, and the token endpoint
    # for staff): after this many failures for one account within the lockout
    # period, that account's log-ins are refused until the period has passed.
    "LOGIN_MAX_FAILURES": env.int("LOGIN_MAX_FAILURES", default=5),
    "LOGIN_LOCKOUT_SECONDS": env.int("LOGIN_LOCKOUT_SECONDS", default=900),
    # Serving processes re-read the registry generation at most this often.
    "REGISTRY_POLL_SECONDS": env.float("REGISTRY_POLL_SECONDS", default=3.0),
    "AUTO_PROMOTE": env.bool("AUTO_PROMOTE", default=False),
    # Training: embedding size, and when a running pipeline whose heartbeat is older
    # than this is presumed dead (its worker killed) and taken over by the next run.
    "EMBEDDING_DIM": env.int("EMBEDDING_DIM", default=32),
    "INDEX_EXACT_THRESHOLD": env.int("INDEX_EXACT_THRESHOLD", default=50_000),
    "TRAINING_STALE_SECONDS": env.int("TRAINING_STALE_SECONDS", default=1800),
    # Serving: the in-memory member store is reloaded at least this often (new
    # members, changed profiles); reloads run in a background thread unless off.
    "SERVING_STORE_REFRESH_SECONDS": env.float(
        "SERVING_STORE_REFRESH_SECONDS", default=600.0
    ),
    "SERVING_RELOAD_IN_BACKGROUND": env.bool(
        "SERVING_RELOAD_IN_BACKGROUND", default=True
    ),
    # A process's first recommendation requests wait this long for its first
    # load (all of them share it) before answering without models, uncached.
    "SERVING_FIRST_LOAD_WAIT_SECONDS": env.float(
        "SERVING_FIRST_LOAD_WAIT_SECONDS", default=10.0
    ),
    # Per-member result cache: a full answer, and a degraded one (kept briefly so
    # members get the full answer soon after serving recovers).
    "RECOMMENDATIONS_CACHE_SECONDS": env.int(
        "RECOMMENDATIONS_CACHE_SECONDS", default=300
    ),
    "RECOMMENDATIONS_DEGRADED_CACHE_SECONDS": env.int(
        "RECOMMENDATIONS_DEGRADED_CACHE_SECONDS", default=30
    ),
    # Data retention (recommender.retention, daily): days impressions, the member
    # vectors of versions that no longer serve and their artifact files are kept
    # (0: for ever), and how many versions that served before the active one stay
    # ready for a rollback. The ranking model trains on the last 30 days of
    # impressions and the A/B report reads them: keep impressions longer than that.
    "IMPRESSIONS_RETENTION_DAYS": env.int("IMPRESSIONS_RETENTION_DAYS", default=180),
    "EMBEDDINGS_RETENTION_DAYS": env.int("EMBEDDINGS_RETENTION_DAYS", default=14),
    "ARTIFACTS_RETENTION_DAYS": env.int("ARTIFACTS_RETENTION_DAYS", default=30),
    "ROLLBACK_VERSIONS_KEPT": env.int("ROLLBACK_VERSIONS_KEPT", default=2),
    # A/B guardrail (every AB_GUARDRAIL_SECONDS): a challenger whose like or match
    # rate is lower than control's at this two-sided significance level, with at
    # least this many impressions in each arm, is stopped (traffic 0, audited).
    "AB_GUARDRAIL_ALPHA": env.float("AB_GUARDRAIL_ALPHA", default=0.01),
    "AB_GUARDRAIL_MIN_IMPRESSIONS": env.int(
        "AB_GUARDRAIL_MIN_IMPRESSIONS", default=1000
    ),
}

# Structured logs (config/logging_setup.py): JSON lines, readable ones with DEBUG
# (or LOG_FORMAT=console); one "request" line per request unless LOG_REQUESTS is off.
LOGGING = logging_config(
    debug=(env("LOG_FORMAT", default="") or ("console" if DEBUG else "json"))
    == "console",
    level=env("LOG_LEVEL", default="INFO"),
)
LOG_REQUESTS = env.bool("LOG_REQUESTS", default=True)
