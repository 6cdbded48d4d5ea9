"""URIs that can carry credentials: ``--storage-path`` and ``--mlflow-tracking-uri``.

A URI's user-info (``http://user:token@host``) and key parameters (``?secret_key=...``) are
credentials: rnnforge refuses them in its options, because config.json, MLflow's params and every
log line would carry them, and ``redacted`` takes them out of any text it prints (an
``MLFLOW_TRACKING_URI`` from the environment, an error message that quotes a URI)::

    redacted("http://alice:s3cret@mlflow.example:5000/x")   # 'http://***@mlflow.example:5000/x'
"""

from __future__ import annotations

import re

from rnnforge.core.errors import UserError

_USER_INFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]+@")
_KEY_PARAMETER = re.compile(r"(?P<key>\b(?:access_key|secret_key|password|token)=)[^&#\s]+", re.IGNORECASE)


def redacted(text: str) -> str:
    """``text`` with every URI's user-info and key parameters replaced by ``***``."""
    return _KEY_PARAMETER.sub(r"\g<key>***", _USER_INFO.sub(r"\g<scheme>***@", text))


def refuse_credentials(option: str, uri: str, instead: str) -> None:
    """Refuse ``uri`` (the value of ``option``) if it holds credentials; ``instead`` says where
    they go (an environment variable, a credentials file). The refusal shows the URI redacted."""
    if redacted(uri) != uri:
        raise UserError(
            f"{option} {redacted(uri)}: the URI holds credentials; {instead}, never in the URI "
            "(config.json, logs and reports would carry them)"
        )
