"""Evaluate grayshift's release toggle with the Unleash Python SDK, locally,
as a worker would (tests/flags.rs drives this script).

    python3 unleash_eval.py API_URL TOKEN TOGGLE USERS_FILE

API_URL ends in /api (the SDK adds /client/features). Each line read on stdin asks for one round:
every user in USERS_FILE is checked with is_enabled(TOGGLE, {"userId": user})
and one JSON line of booleans is printed. The SDK refreshes every second.
"""

import json
import sys

from UnleashClient import UnleashClient

api_url, token, toggle, users_file = sys.argv[1:5]
with open(users_file) as f:
    users = [line.strip() for line in f if line.strip()]

client = UnleashClient(
    url=api_url,
    app_name="grayshift-flags-test",
    instance_id="worker-1",
    refresh_interval=1,
    metrics_interval=1,
    custom_headers={"Authorization": token},
)
client.initialize_client()

for _ in sys.stdin:
    print(json.dumps([client.is_enabled(toggle, {"userId": user}) for user in users]), flush=True)
client.destroy()
