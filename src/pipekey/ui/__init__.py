"""The inventory as web pages (``pipekey[ui]``: FastAPI and Jinja2, imported when used).

:mod:`pipekey.ui.app` builds the FastAPI app, server-rendered, no JavaScript; two hosts serve
it: ``pipekey ui`` (:mod:`pipekey.ui.server`: 127.0.0.1 only, a random token) and the Airflow 3
plugin (:mod:`pipekey.integrations.airflow_ui`: behind Airflow's authentication, a user seeing
only their teams).
"""
