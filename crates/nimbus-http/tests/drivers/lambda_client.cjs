// Drives nimbus's Invoke API with the AWS SDK for JavaScript v3 (@aws-sdk/client-lambda),
// unmodified: the endpoint comes from AWS_ENDPOINT_URL_LAMBDA. One JSON command in argv[2], one
// JSON result on stdout: what the SDK returned, or the modelled exception it threw.
const { LambdaClient, InvokeCommand } = require("@aws-sdk/client-lambda");

async function main() {
  const cmd = JSON.parse(process.argv[2]);
  const client = new LambdaClient({ maxAttempts: cmd.max_attempts ?? 3 });
  const input = { FunctionName: cmd.function };
  if (cmd.invocation_type) input.InvocationType = cmd.invocation_type;
  if (cmd.log_type) input.LogType = cmd.log_type;
  if (cmd.payload !== undefined) input.Payload = Buffer.from(cmd.payload);
  let result;
  try {
    const out = await client.send(new InvokeCommand(input));
    result = {
      StatusCode: out.StatusCode,
      FunctionError: out.FunctionError ?? null,
      ExecutedVersion: out.ExecutedVersion ?? null,
      Payload: out.Payload ? Buffer.from(out.Payload).toString() : "",
      Log: out.LogResult ? Buffer.from(out.LogResult, "base64").toString() : null,
    };
  } catch (e) {
    result = {
      exception: e.name,
      status: e.$metadata?.httpStatusCode,
      reason: e.Reason ?? null,
      message: e.message,
    };
  }
  console.log(JSON.stringify(result));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
