"""Sends one request to a gateway route signed as a client of an IAM-authorized API Gateway
route signs it: botocore's SigV4Auth for the service execute-api, sent with urllib. One JSON
command in argv[1] (url, method, region, body, access_key and secret_key, or unsigned); one JSON
result on stdout: the status, the headers (names lower-case) and the body."""

import json
import sys
import urllib.error
import urllib.request

import botocore.auth
import botocore.awsrequest
import botocore.credentials


def main():
    cmd = json.loads(sys.argv[1])
    body = cmd.get("body", "").encode()
    headers = {"Content-Type": "application/json"} if body else {}
    request = botocore.awsrequest.AWSRequest(
        method=cmd["method"], url=cmd["url"], data=body, headers=headers
    )
    if not cmd.get("unsigned"):
        credentials = botocore.credentials.Credentials(cmd["access_key"], cmd["secret_key"])
        signer = botocore.auth.SigV4Auth(
            credentials, cmd.get("service", "execute-api"), cmd["region"]
        )
        signer.add_auth(request)
    prepared = request.prepare()
    sent = urllib.request.Request(
        prepared.url,
        data=prepared.body or None,
        headers=dict(prepared.headers.items()),
        method=prepared.method,
    )
    try:
        with urllib.request.urlopen(sent, timeout=30) as response:
            status, answer_headers, data = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, answer_headers, data = error.code, error.headers, error.read()
    print(
        json.dumps(
            {
                "status": status,
                "headers": {name.lower(): value for name, value in answer_headers.items()},
                "body": data.decode(),
            }
        )
    )


if __name__ == "__main__":
    main()
