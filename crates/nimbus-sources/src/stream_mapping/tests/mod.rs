//! Unit tests of the stream engine, one file per module: balancing against a scripted lease
//! store, progress against the rule that a checkpoint never passes an unfinished record,
//! windows against their state rules, failure handling, lanes and the reader, the
//! on-failure record and the batch as JSON against Lambda's, and batches cut at Lambda's payload limit.

mod balance;
mod event;
mod failure;
mod payload;
mod progress;
mod reader;
mod record;
mod round;
mod support;
mod window;
