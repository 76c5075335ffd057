//! Behaviour tests of queue and stream sources and their mappings, under Tokio's paused test
//! clock.

mod support;

mod access;
mod budget;
mod contract;
mod drained;
mod draining;
mod filters;
mod guards;
mod hostile;
mod limits;
mod loops;
mod mapping;
mod memory;
mod objects;
mod objects_s3;
mod properties;
mod seams;
mod singles;
mod sqs_event;
mod stats;
mod stream_drain;
mod stream_fencing;
mod stream_filters;
mod stream_lambda;
mod stream_mapping;
mod stream_memory;
mod stream_properties;
mod stream_sequences;
mod throttled;
