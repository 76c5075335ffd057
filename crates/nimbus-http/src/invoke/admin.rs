//! Who may read functions' settings (`ListFunctions`, `GetFunction`) and read or change their
//! policies (`GetPolicy`, `AddPermission`, `RemovePermission`) over HTTP: the host (every
//! request of a server without credentials), and, on a server with credentials, identities of
//! the runtime's own account while it trusts them
//! ([`AccessSettings::trust_same_account`](nimbus_core::permission::AccessSettings)).
//!
//! nimbus models no identity policies, so no other caller can be granted these actions: were
//! anyone let in, any caller could grant itself the right to invoke, or list every function.
//! Others get 403 `AccessDeniedException`, before the function is looked up, so that a refused
//! caller learns nothing of which functions exist.

use nimbus_core::{AccessDenied, Principal};

use super::error::AwsError;
use super::{name, InvokeApi};

/// Whether `caller` may perform `action` on the function `raw_name` (as the request names
/// it), or on every function when `None`.
pub(crate) fn authorize(
    state: &InvokeApi,
    caller: &Principal,
    raw_name: Option<&str>,
    action: &str,
) -> Result<(), AwsError> {
    let config = state.runtime.config();
    let allowed = match caller {
        Principal::Host => true,
        Principal::Identity { account, .. } => {
            config.access.trust_same_account && **account == *config.account_id
        }
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    let arn =
        |name: &str| nimbus_core::util::aws::function_arn(&config.region, &config.account_id, name);
    let resource = match raw_name {
        None => arn("*"),
        Some(raw) => name::parse(raw).map_or_else(|_| raw.to_owned(), |f| arn(&f.name)),
    };
    Err(AwsError::access_denied(&AccessDenied::new(
        caller.to_string(),
        action,
        resource,
    )))
}

#[cfg(test)]
mod tests {
    use nimbus_core::{Runtime, RuntimeConfig};

    use super::*;
    use crate::server::AppState;

    fn identity(account: &str) -> Principal {
        Principal::Identity {
            arn: format!("arn:aws:iam::{account}:user/ana").into(),
            account: account.into(),
            org_id: None,
        }
    }

    #[test]
    fn the_host_and_the_runtimes_own_account_may_and_no_one_else() {
        let state = AppState::for_tests(Runtime::default());
        let may = |caller: &Principal| {
            authorize(&state.invoke, caller, Some("orders"), "lambda:GetPolicy").is_ok()
        };
        assert!(may(&Principal::Host));
        assert!(may(&identity("000000000000")));
        assert!(!may(&identity("111122223333")));
        assert!(!may(&Principal::Anonymous));

        let refused = authorize(
            &state.invoke,
            &Principal::Anonymous,
            None,
            "lambda:ListFunctions",
        )
        .unwrap_err();
        assert!(refused.body().contains(
            "anonymous is not authorized to perform: lambda:ListFunctions on resource: \
             arn:aws:lambda:us-east-1:000000000000:function:*"
        ));
    }

    #[test]
    fn an_untrusted_own_account_may_not() {
        let config = RuntimeConfig::default().with_same_account_trusted(false);
        let state = AppState::for_tests(Runtime::new(config).unwrap());
        let own = identity("000000000000");
        assert!(authorize(&state.invoke, &own, Some("orders"), "lambda:GetPolicy").is_err());
    }
}
