# The bench's entry point for AWS's SecretsManagerRDSMySQLRotationMultiUser function, which the
# bench runs unchanged from the folder given to `bench-report --rotation-anchor` (its code is not
# part of this repository). One thing differs from Lambda: the function trusts the CA bundle at
# the fixed path /etc/pki/tls/cert.pem, which on this machine does not exist and would not hold
# the bench MariaDB's test CA; connections asking for that bundle get ANCHOR_DB_CA instead. The
# same verification (certificate chain and host name) happens, against the test CA.
import os

import pymysql

_LAMBDA_CA = "/etc/pki/tls/cert.pem"
_BENCH_CA = os.environ["ANCHOR_DB_CA"]
_connect = pymysql.connect


def _connect_with_bench_ca(*args, **kwargs):
    ssl = kwargs.get("ssl")
    if isinstance(ssl, dict) and ssl.get("ca") == _LAMBDA_CA:
        kwargs["ssl"] = dict(ssl, ca=_BENCH_CA)
    return _connect(*args, **kwargs)


pymysql.connect = _connect_with_bench_ca

from lambda_function import lambda_handler  # noqa: E402,F401  (the anchor's own handler)
