//! `nimbus serve`: the loader's errors name the line and the field; buckets and Redis mappings
//! of a file reach their functions; and the binary serves examples/serve.toml, then stops on
//! SIGINT or SIGTERM without losing an accepted event: each one is finished (succeeded, or
//! failed and kept) or reported as handed back unfinished, and each finished order reaches the
//! shipping function or is reported as left in its queue.

mod binary;
mod loader;
mod platform;
mod support;
