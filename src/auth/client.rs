//! The client side: an interceptor that adds `authorization: Bearer <key>` to every request
//! (used by the CLI and the tests).

use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::Interceptor,
};

/// Adds the key, when there is one, to each request.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(<redacted>)"
        } else {
            "Bearer(none)"
        })
    }
}

impl Bearer {
    /// An interceptor sending `key` (none: requests go without a key).
    ///
    /// Errors: the key has characters a header cannot carry.
    pub fn new(key: Option<&str>) -> Result<Bearer, tonic::metadata::errors::InvalidMetadataValue> {
        key.map(|k| {
            let mut value = MetadataValue::try_from(format!("Bearer {k}"))?;
            value.set_sensitive(true);
            Ok(value)
        })
        .transpose()
        .map(Bearer)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}
