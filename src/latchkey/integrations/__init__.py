"""Integrations with the tools pipelines run in. Each is imported on its own and needs its
extra: ``latchkey.integrations.dlt`` (``latchkey[dlt]``), ``latchkey.integrations.airflow``
(``latchkey[airflow]``)."""
