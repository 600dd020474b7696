#!/usr/bin/env bash
# A Python virtualenv with the outside validators the EHR handler tests start on loopback:
# fhir.resources (FHIR R4/R4B models), PyJWT + cryptography (the SMART token endpoint's check
# of the client assertion), hl7 (the MLLP fixture's HL7 v2 parser) and opentelemetry-proto (the
# OTLP/HTTP receiver that tests/api/otlp.rs exports traces to). Idempotent.
#   bash deploy/ci/python-fixtures.sh            # creates /opt/wardhook-test-venv
#   export WARDHOOK_TEST_PYTHON=/opt/wardhook-test-venv/bin/python
set -euo pipefail
venv=${WARDHOOK_TEST_VENV:-/opt/wardhook-test-venv}
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  apt-get update -qq
  apt-get install -y -qq python3-venv >/dev/null
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
  'fhir.resources>=7,<9' 'PyJWT[crypto]>=2.8,<3' 'cryptography>=42' 'hl7>=0.4.5,<0.5' \
  'opentelemetry-proto>=1.20,<2'
"$venv/bin/python" -c 'import fhir.resources, jwt, hl7, opentelemetry.proto.collector.trace.v1.trace_service_pb2; print("python fixtures ready:", fhir.resources.__version__, jwt.__version__)'
