"""The dlt source of the quickstart: an account's campaigns from the ads API.

``api_token = dlt.secrets.value`` is an ordinary dlt secret: dlt looks it up, and inside a
pipekey run the pipekey provider answers with that run's own token.
"""

from __future__ import annotations

import dlt
import requests


@dlt.source(name="ads")
def ads(account: str, base_url: str, api_token: str = dlt.secrets.value):
    """Campaigns of one account."""

    @dlt.resource(name="campaigns", write_disposition="replace", primary_key="campaign_id")
    def campaigns():
        response = requests.get(f"{base_url}/accounts/{account}/campaigns",
                                headers={"Authorization": f"Bearer {api_token}"}, timeout=10)
        response.raise_for_status()  # a wrong token is a 401: the load fails loudly
        yield response.json()["campaigns"]

    return campaigns
