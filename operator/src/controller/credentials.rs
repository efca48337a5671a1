//! The credentials step of the reconcile: the operator's own Secret (kept, or generated when
//! missing), or the user's `spec.broker.credentialsSecret`, and what to report about them.
use super::owned::{Owner, Seen};
use crate::builders::Names;
use crate::builders::secret::{Credentials, key, secret_value};
use crate::decisions::status::CredentialsState;
use crate::error::{Error, Result};
use futures::FutureExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::reflector::ObjectRef;
use std::sync::Arc;
use tracing::{info, warn};

/// What the credentials step found.
pub struct Found {
    /// The credentials to use (`None`: the user's Secret is missing or incomplete).
    pub creds: Option<Credentials>,
    /// What the status says about them.
    pub state: CredentialsState,
    /// The operator's own Secret as observed (for its ensure step).
    pub own: Seen<Secret>,
    /// The operator's Secret was missing or incomplete, so new credentials are generated.
    pub regenerated: bool,
}

/// Reads the operator's Secret and the user's, and chooses the credentials.
///
/// A complete cached copy of the operator's Secret is as good as a live read: the password
/// only changes when the Secret is edited, and the watch brings that within moments. Anything
/// that would make the operator generate credentials or a cookie (missing, incomplete) is
/// confirmed live first: a lagging cache must never replace a good Secret.
pub async fn resolve(o: &Owner<'_>, names: &Names) -> Result<Found> {
    let managed = o.sm.is_managed();
    let own = match o.observe::<Secret>(&names.secret).await? {
        Seen::Cached(s) if Credentials::from_secret(&s, managed).is_none() => {
            Seen::Live(o.get(&names.secret).await?)
        }
        seen => seen,
    };
    let own_secret = own.current();
    let regenerated = o.sm.spec.broker.credentials_secret.is_none()
        && own_secret
            .as_ref()
            .and_then(|s| Credentials::from_secret(s, managed))
            .is_none();
    let (creds, state) = choose(o, own_secret.as_ref(), names).await?;
    Ok(Found {
        creds,
        state,
        own,
        regenerated,
    })
}

/// Warns (an Event) when credentials were regenerated for a broker that already ran: its
/// clients' old credentials stop working. The broker itself follows: its pod template's
/// credentials fingerprint changed, so it restarts and imports the new user at boot
/// (`load_definitions`); the old user stays on the broker until deleted.
pub async fn warn_if_the_broker_ran(o: &Owner<'_>, names: &Names) -> Result<()> {
    if !o
        .observe::<StatefulSet>(&names.stateful_set)
        .await?
        .exists()
    {
        return Ok(());
    }
    let note = format!(
        "Secret {} was missing or incomplete and got new credentials: the broker restarts \
         to import the new user (its data is kept); clients must read the new Secret; the \
         old user stays on the broker until deleted (rabbitmqctl delete_user)",
        names.secret
    );
    warn!("{note}");
    o.ctx
        .event(o.sm, true, "CredentialsRegenerated", note)
        .await;
    Ok(())
}

/// The user's Secret `name`. It is not the operator's (no managed-by label, so not in the
/// owned caches): the metadata-only watch of Secrets says whether it exists and at which
/// resourceVersion, and it is read from the API server only when that is not the version
/// last read. At rest nothing is read; a changed password is read once, and its watch event
/// triggers the reconcile. Without the watch (not started, or still loading), read live.
/// Reads are counted as kind `credentialsSecret`.
async fn user_secret_of(o: &Owner<'_>, name: &str) -> Result<Option<Secret>> {
    let key = (o.ns.to_owned(), name.to_owned());
    let versions = o.ctx.caches.get().map(|c| &c.secret_versions).filter(|v| {
        v.wait_until_ready()
            .now_or_never()
            .is_some_and(|r| r.is_ok())
    });
    if let Some(versions) = versions {
        let Some(seen) = versions.get(&ObjectRef::new(name).within(o.ns)) else {
            o.ctx
                .user_secrets
                .lock()
                .expect("never poisoned")
                .remove(&key);
            return Ok(None);
        };
        let known = o
            .ctx
            .user_secrets
            .lock()
            .expect("never poisoned")
            .get(&key)
            .filter(|s| s.metadata.resource_version == seen.metadata.resource_version)
            .cloned();
        if let Some(secret) = known {
            return Ok(Some(Secret::clone(&secret)));
        }
    }
    o.ctx.metrics.read("credentialsSecret");
    let live = Api::<Secret>::namespaced(o.ctx.client.clone(), o.ns)
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("get Secret {name}")))?;
    let mut memo = o.ctx.user_secrets.lock().expect("never poisoned");
    match &live {
        Some(secret) => memo.insert(key, Arc::new(secret.clone())),
        None => memo.remove(&key),
    };
    Ok(live)
}

/// The credentials to use and what to report about them.
async fn choose(
    o: &Owner<'_>,
    own: Option<&Secret>,
    names: &Names,
) -> Result<(Option<Credentials>, CredentialsState)> {
    let sm = o.sm;
    let managed = sm.is_managed();
    let Some(user_secret) = &sm.spec.broker.credentials_secret else {
        let (creds, generated) = Credentials::keep_or_generate(own, managed);
        if generated {
            info!(secret = %names.secret, username = %creds.username, "generated broker credentials");
        }
        let state = CredentialsState::Ok {
            secret: names.secret.clone(),
            username: creds.username.clone(),
        };
        return Ok((Some(creds), state));
    };
    let Some(source) = user_secret_of(o, user_secret).await? else {
        return Ok((None, CredentialsState::SecretNotFound(user_secret.clone())));
    };
    let incomplete = |key: &str| CredentialsState::SecretIncomplete {
        secret: user_secret.clone(),
        key: key.into(),
    };
    let Some(username) = secret_value(&source, key::USERNAME) else {
        return Ok((None, incomplete(key::USERNAME)));
    };
    let Some(password) = secret_value(&source, key::PASSWORD) else {
        return Ok((None, incomplete(key::PASSWORD)));
    };
    // A managed broker still needs a cookie of its own: kept from the operator's Secret.
    let erlang_cookie = managed.then(|| {
        own.and_then(|s| secret_value(s, key::ERLANG_COOKIE))
            .unwrap_or_else(|| {
                Credentials::generate(&mut rand::rng(), true)
                    .erlang_cookie
                    .unwrap_or_default()
            })
    });
    let state = CredentialsState::Ok {
        secret: names.secret.clone(),
        username: username.clone(),
    };
    Ok((
        Some(Credentials {
            username,
            password,
            erlang_cookie,
        }),
        state,
    ))
}
