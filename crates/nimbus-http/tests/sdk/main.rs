//! The Lambda Invoke API driven by clients nobody here wrote: boto3 and the AWS CLI v1, pointed
//! at nimbus with only `AWS_ENDPOINT_URL_LAMBDA`.

mod boto3;
mod cli;
mod support;
