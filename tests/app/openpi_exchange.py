"""Run by tests/app/test_serve.py in an environment with openpi-client: openpi's own WebsocketClientPolicy
and ActionChunkBroker against `gpc serve`; prints what it saw as JSON.  Usage: openpi_exchange.py PORT TOKEN"""

import json
import sys

import numpy as np
from openpi_client.action_chunk_broker import ActionChunkBroker
from openpi_client.websocket_client_policy import WebsocketClientPolicy

port, token = int(sys.argv[1]), sys.argv[2]
try:
    WebsocketClientPolicy("127.0.0.1", port)
    refused = ""
except Exception as err:  # noqa: BLE001 - the refusal is what is reported
    refused = str(err)
policy = WebsocketClientPolicy("127.0.0.1", port, api_key=token)
metadata = policy.get_server_metadata()
frame = np.linspace(0.0, 500.0, 20, dtype=np.float32)
actions = policy.infer({"keypoint": frame, "seed": 7})["actions"]
try:
    policy.infer({"keypoint": frame[:3]})
    error = ""
except RuntimeError as err:
    error = str(err)
after_error = policy.infer({"keypoint": frame, "seed": 7})["actions"]
broker = ActionChunkBroker(policy, action_horizon=metadata["n_action_steps"])
first_action = broker.infer({"keypoint": frame, "seed": 7})["actions"]
print(json.dumps({"metadata": metadata, "frame": frame.tolist(), "actions": actions.tolist(), "error": error,
                  "actions_after_error": after_error.tolist(), "broker_action": first_action.tolist(),
                  "refused": refused}))
