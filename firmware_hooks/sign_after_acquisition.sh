#!/bin/sh
# Sign a just-acquired DICOM image with the device's capture key, before it leaves the device.
#
#   sign_after_acquisition.sh IMAGE.dcm [SIGNED.dcm]
#
# Adds a Creator RSA Digital Signature (DICOM PS3.15 C.2, SHA-256) over the image's identifying,
# equipment, image and pixel attributes. Without SIGNED.dcm the image is replaced in place,
# atomically (a crash leaves the old file or the whole signed one, never half of either).
#
# Environment (defaults in brackets):
#   EDGE_AGENT_CAPTURE_KEY   PEM RSA private key, mode 0600  [/etc/edge-agent/capture/capture.key]
#   EDGE_AGENT_CAPTURE_CERT  its PEM X.509 certificate       [/etc/edge-agent/capture/capture.crt]
#   EDGE_AGENT               the edge-agent command           [edge-agent]
#
# Exit status: 0 signed; 2 not signed (the reason is on stderr: key file mode, expired
# certificate, not a DICOM file...); 64 usage. On failure the input file is left untouched:
# the firmware must keep and forward the image anyway (an unsigned image is judged "unsigned",
# a lost image is a lost examination).
set -eu

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ]; then
    echo "usage: $0 IMAGE.dcm [SIGNED.dcm]" >&2
    exit 64
fi

image=$1
signed=${2:-$1}
key=${EDGE_AGENT_CAPTURE_KEY:-/etc/edge-agent/capture/capture.key}
cert=${EDGE_AGENT_CAPTURE_CERT:-/etc/edge-agent/capture/capture.crt}

exec "${EDGE_AGENT:-edge-agent}" sign-dicom "$image" "$signed" --key "$key" --cert "$cert"
