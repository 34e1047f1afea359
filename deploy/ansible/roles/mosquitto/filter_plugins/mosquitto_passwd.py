"""``mosquitto_passwd_hash``: a mosquitto 2 password-file hash that is the same on every run.

``mosquitto_passwd`` draws a random salt, so regenerating the file with it would
change the file (and restart the broker) on every Ansible run. This filter makes
the same ``$7$`` (PBKDF2-SHA512) entry mosquitto_passwd does, with a salt derived
from the user and password: equal input, equal file, no change reported.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

ITERATIONS = 101  # mosquitto_passwd's default
SALT_BYTES = 12


def mosquitto_passwd_hash(password: str, user: str, iterations: int = ITERATIONS) -> str:
    secret = str(password).encode()
    salt = hmac.new(secret, f"mosquitto-salt:{user}".encode(), hashlib.sha256).digest()[:SALT_BYTES]
    digest = hashlib.pbkdf2_hmac("sha512", secret, salt, int(iterations))
    return f"$7${int(iterations)}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class FilterModule:
    def filters(self):
        return {"mosquitto_passwd_hash": mosquitto_passwd_hash}
