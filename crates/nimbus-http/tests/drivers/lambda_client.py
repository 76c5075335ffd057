"""Drives nimbus's Invoke API with boto3, unmodified: the endpoint comes from the environment
(AWS_ENDPOINT_URL_LAMBDA), as a user's script would get it. One JSON command in argv[1], one
JSON result on stdout: what boto3 returned, or the modelled exception it raised."""

import base64
import datetime
import json
import sys

import boto3
import botocore
import botocore.auth
import botocore.config


def main():
    cmd = json.loads(sys.argv[1])
    if "clock_offset_secs" in cmd:
        # A client whose clock is off: its signatures carry that time.
        now = botocore.auth.get_current_datetime
        offset = datetime.timedelta(seconds=cmd["clock_offset_secs"])
        botocore.auth.get_current_datetime = lambda *a, **k: now(*a, **k) + offset
    settings = {}
    if cmd.get("unsigned"):
        # No Authorization header at all: an anonymous caller.
        settings["signature_version"] = botocore.UNSIGNED
    config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": cmd.get("max_attempts", 3)},
        read_timeout=cmd.get("read_timeout", 60),
        **settings,
    )
    keys = {}
    if "access_key" in cmd:
        keys = {
            "aws_access_key_id": cmd["access_key"],
            "aws_secret_access_key": cmd["secret_key"],
        }
    client = boto3.client("lambda", config=config, **keys)
    op = cmd["op"]
    try:
        if op == "invoke":
            args = {"FunctionName": cmd["function"]}
            for key, arg in [
                ("invocation_type", "InvocationType"),
                ("log_type", "LogType"),
                ("qualifier", "Qualifier"),
            ]:
                if key in cmd:
                    args[arg] = cmd[key]
            if "payload" in cmd:
                args["Payload"] = cmd["payload"].encode()
            if "payload_string_of" in cmd:
                # A JSON string of this many bytes, too long for a command line.
                args["Payload"] = b'"' + b"x" * cmd["payload_string_of"] + b'"'
            if "client_context" in cmd:
                args["ClientContext"] = base64.b64encode(
                    json.dumps(cmd["client_context"]).encode()
                ).decode()
            out = client.invoke(**args)
            result = {
                "StatusCode": out["StatusCode"],
                "FunctionError": out.get("FunctionError"),
                "ExecutedVersion": out.get("ExecutedVersion"),
                "Payload": out["Payload"].read().decode(),
                "RequestId": out["ResponseMetadata"].get("RequestId"),
                "Attempts": out["ResponseMetadata"].get("RetryAttempts"),
            }
            if "LogResult" in out:
                result["Log"] = base64.b64decode(out["LogResult"]).decode()
        elif op == "list":
            args = {"MaxItems": cmd["max_items"]} if "max_items" in cmd else {}
            names, marker = [], None
            while True:
                page = client.list_functions(**args, **({"Marker": marker} if marker else {}))
                names += [f["FunctionName"] for f in page["Functions"]]
                marker = page.get("NextMarker")
                if not marker:
                    break
            result = {"names": names}
        elif op == "call":
            # Any other operation, by its boto3 method name, with its arguments as given.
            out = getattr(client, cmd["method"])(**cmd.get("args", {}))
            result = {k: v for k, v in out.items() if k != "ResponseMetadata"}
            result["status"] = out["ResponseMetadata"]["HTTPStatusCode"]
        elif op == "get":
            out = client.get_function(FunctionName=cmd["function"])
            out.pop("ResponseMetadata", None)
            result = out
        else:
            raise SystemExit(f"unknown op {op}")
    except client.exceptions.ResourceNotFoundException as e:
        result = exception("ResourceNotFoundException", e)
    except client.exceptions.TooManyRequestsException as e:
        result = exception("TooManyRequestsException", e)
    except client.exceptions.RequestTooLargeException as e:
        result = exception("RequestTooLargeException", e)
    except client.exceptions.InvalidRequestContentException as e:
        result = exception("InvalidRequestContentException", e)
    except client.exceptions.ResourceConflictException as e:
        result = exception("ResourceConflictException", e)
    except client.exceptions.PreconditionFailedException as e:
        result = exception("PreconditionFailedException", e)
    except client.exceptions.InvalidParameterValueException as e:
        result = exception("InvalidParameterValueException", e)
    except botocore.exceptions.ClientError as e:
        result = exception("ClientError", e)
    print(json.dumps(result, default=str))


def exception(modelled, e):
    response = e.response
    return {
        "exception": modelled,
        "code": response["Error"]["Code"],
        "message": response["Error"].get("Message"),
        "status": response["ResponseMetadata"]["HTTPStatusCode"],
        "reason": response.get("Reason"),
        "retry_after": response["ResponseMetadata"]["HTTPHeaders"].get("retry-after"),
        "attempts": response["ResponseMetadata"].get("RetryAttempts"),
    }


if __name__ == "__main__":
    main()
