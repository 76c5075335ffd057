//! Real Lambda runtime clients, unmodified, served as nimbus functions through the Runtime API:
//! a Rust binary built with `lambda_runtime`, Python's `awslambdaric`, Node.js's
//! `aws-lambda-ric` and a shell `bootstrap` with `curl`. The Python and Node.js clients are
//! installed by `.ci/clients`; without them those tests skip, loudly, unless
//! `NIMBUS_REQUIRE_SERVICES=1`.

mod behaviour;
mod instances;
mod layers;
mod limits;
mod permissions;
mod protocol;
mod support;

use support::Client;

/// The scenarios of `behaviour` for one client, as tests.
macro_rules! client_tests {
    ($module:ident, $client:expr, init_error: $init:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sync_invokes_reuse_a_warm_instance() {
                behaviour::sync_invokes_reuse_a_warm_instance($client).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_function_error_is_typed_and_keeps_the_instance() {
                behaviour::a_function_error_is_typed_and_keeps_the_instance($client).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_timeout_kills_the_process() {
                behaviour::a_timeout_kills_the_process($client).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_crash_discards_the_instance() {
                behaviour::a_crash_discards_the_instance($client).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_init_failure_is_typed() {
                behaviour::an_init_failure_is_typed($client, $init).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn async_invokes_reach_their_destinations() {
                behaviour::async_invokes_reach_their_destinations($client).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_queue_mapping_feeds_the_process() {
                behaviour::a_queue_mapping_feeds_the_process($client).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_log_is_captured_per_invocation() {
                behaviour::the_log_is_captured_per_invocation($client).await;
            }
        }
    };
}

// Rust exits before its first `/next` on an init failure; Python and Node.js report it on
// `/init/error` with the type of the exception their module raised.
client_tests!(rust, Client::Rust, init_error: "Runtime.ExitError");
client_tests!(python, Client::Python, init_error: "RuntimeError");
client_tests!(node, Client::Node, init_error: "Error");
client_tests!(shell, Client::Shell, init_error: "Runtime.ExitError");

// The shell fixture reads no context; the three client libraries do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_context_reaches_the_rust_runtime() {
    behaviour::the_context_reaches_the_runtime(Client::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_context_reaches_the_python_runtime() {
    behaviour::the_context_reaches_the_runtime(Client::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_context_reaches_the_node_runtime() {
    behaviour::the_context_reaches_the_runtime(Client::Node).await;
}
