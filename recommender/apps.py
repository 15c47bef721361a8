from django.apps import AppConfig


class RecommenderConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "recommender"

    def ready(self):
        # The kernel (config) names no app: the recommender hands it its /health
        # components and its scrape-time metrics. Importing recommender.metrics
        # also defines the recommendation path's metrics, so /metrics lists them
        # from the process's start.
        from config.health import health_components_register
        from config.metrics import database_collector_register
        from recommender.health import SERVING_COMPONENTS, serving_health_components
        from recommender.metrics import TrainingCollector

        health_components_register(
            serving_health_components, components=SERVING_COMPONENTS
        )
        database_collector_register(
            TrainingCollector(last_finished=_training_run_last_finished)
        )


def _training_run_last_finished(*, status: str):
    # Imported at scrape time: the selectors bring the A/B statistics, which
    # ready() has no use for.
    from recommender.selectors import training_run_last_finished

    return training_run_last_finished(status=status)
