//! What a caller may tell an invocation beyond its event, as Lambda's `Invoke` carries it:
//! the mobile client's [`ClientContext`], the caller's [`CognitoIdentity`] and an X-Ray trace
//! header. Rare, so they travel together behind one optional reference.

use std::collections::HashMap;

/// The mobile application that invoked the function, in Lambda's `ClientContext` JSON
/// (`installationId`, `appTitle`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientApplication {
    /// The installation's id.
    pub installation_id: String,
    /// The application's title.
    pub app_title: String,
    /// The application's version name.
    pub app_version_name: String,
    /// The application's version code.
    pub app_version_code: String,
    /// The application's package name.
    pub app_package_name: String,
}

/// The client context a caller passed with a synchronous invocation (Lambda's
/// `X-Amz-Client-Context`, decoded): the application, and string maps of custom values and
/// of the client's environment.
///
/// # Example
///
/// ```
/// use nimbus_core::ClientContext;
///
/// let json = r#"{"client":{"installationId":"i","appTitle":"t","appVersionName":"1.0",
///     "appVersionCode":"1","appPackageName":"p"},"custom":{"k":"v"},"environment":{}}"#;
/// let ctx: ClientContext = serde_json::from_str(json).unwrap();
/// assert_eq!(ctx.client.app_title, "t");
/// assert_eq!(ctx.custom["k"], "v");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientContext {
    /// The application.
    #[serde(default)]
    pub client: ClientApplication,
    /// Custom values the application set.
    #[serde(default)]
    pub custom: HashMap<String, String>,
    /// The client's environment (platform, make, model, locale, ...).
    #[serde(default)]
    pub environment: HashMap<String, String>,
}

/// The Amazon Cognito identity that invoked the function, in Lambda's JSON
/// (`cognitoIdentityId`, `cognitoIdentityPoolId`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CognitoIdentity {
    /// The identity's id.
    #[serde(rename = "cognitoIdentityId")]
    pub identity_id: String,
    /// The identity pool's id.
    #[serde(rename = "cognitoIdentityPoolId")]
    pub identity_pool_id: String,
}

/// The rare parts of an invocation that callers set through
/// [`InvokeOptions`](crate::InvokeOptions).
#[derive(Debug, Clone, Default)]
pub(crate) struct Extras {
    pub(crate) trace_id: Option<Box<str>>,
    pub(crate) client_context: Option<ClientContext>,
    pub(crate) identity: Option<CognitoIdentity>,
}
