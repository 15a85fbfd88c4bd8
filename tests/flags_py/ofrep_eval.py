"""Evaluate grayshift's release flag with the OpenFeature Python SDK and its
OFREP provider, as a worker would (tests/flags.rs drives this script).

    python3 ofrep_eval.py BASE_URL TOKEN FLAG USERS_FILE

Each line read on stdin asks for one round: every user in USERS_FILE (one a
line) is evaluated, and one JSON line is printed: [[value, variant, reason], ...].
"""

import json
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext

base_url, token, flag, users_file = sys.argv[1:5]
with open(users_file) as f:
    users = [line.strip() for line in f if line.strip()]

api.set_provider(OFREPProvider(base_url, headers_factory=lambda: {"Authorization": f"Bearer {token}"}))
client = api.get_client()

for _ in sys.stdin:
    answers = []
    for user in users:
        details = client.get_boolean_details(flag, False, EvaluationContext(targeting_key=user))
        reason = getattr(details.reason, "value", details.reason)
        answers.append([details.value, details.variant, reason])
    print(json.dumps(answers), flush=True)
