//! Behaviour tests of queue and stream sources and their mappings, under Tokio's paused test
//! clock.

mod support;

mod filters;
mod mapping;
mod memory;
mod objects;
mod properties;
mod stream_mapping;
mod stream_memory;
mod stream_properties;
