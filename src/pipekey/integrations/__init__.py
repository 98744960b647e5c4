"""Integrations with the tools pipelines run in. Each is imported on its own and needs its
extra: ``pipekey.integrations.dlt`` (``pipekey[dlt]``), ``pipekey.integrations.airflow``
(``pipekey[airflow]``)."""
