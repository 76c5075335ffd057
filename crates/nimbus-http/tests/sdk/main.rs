//! The Lambda Invoke API driven by clients nobody here wrote: boto3, the AWS CLI v1 and the AWS
//! SDK for JavaScript v3, pointed at nimbus with only `AWS_ENDPOINT_URL_LAMBDA`.

mod boto3;
mod boto3_auth;
mod boto3_policy;
mod cli;
mod javascript;
mod open_server;
mod support;
