//! The credentials Secret `<name>-rabbitmq` (DESIGN §5).
//!
//! Keys: `username`, `password`, `host`, `port`, `uri`, `management-uri`, and for a broker the
//! operator runs also `erlang-cookie` and `advanced.config` (the broker's default user, mounted
//! into the broker, so the password never sits in a ConfigMap or an environment variable).
//! The user name and password may hold any character: they are percent-encoded in the URIs
//! and written as byte lists in `advanced.config`.
//! The random parts are generated once and taken over from the existing Secret on every later
//! reconcile: nothing rotates by accident.
use super::{Names, retained_object_meta};
use crate::crd::{AMQP_PORT, MANAGEMENT_PORT, SwappoMessaging};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand::Rng;
use rand::distr::{Alphanumeric, Uniform};
use std::collections::BTreeMap;
use std::fmt;

/// Secret keys.
pub mod key {
    /// Broker user name.
    pub const USERNAME: &str = "username";
    /// Broker password.
    pub const PASSWORD: &str = "password";
    /// Host clients dial.
    pub const HOST: &str = "host";
    /// AMQP port.
    pub const PORT: &str = "port";
    /// `amqp://user:pass@host:port/%2f`.
    pub const URI: &str = "uri";
    /// `http://user:pass@host:15672`.
    pub const MANAGEMENT_URI: &str = "management-uri";
    /// Erlang distribution cookie of a managed broker.
    pub const ERLANG_COOKIE: &str = "erlang-cookie";
    /// `default_user`/`default_pass` of a managed broker, as an Erlang `advanced.config`.
    pub const ADVANCED_CONFIG: &str = "advanced.config";
    /// The user of a managed broker as RabbitMQ definitions, imported at every boot.
    pub const DEFINITIONS: &str = "definitions.json";
}

/// What is percent-encoded in a URI's user information: everything but RFC 3986's unreserved
/// characters (`A-Z a-z 0-9 - . _ ~`), so `@ : / # ? %` and non-ASCII cannot end the user
/// name or password early; every URI parser decodes it back.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `user:password` percent-encoded for a URI's authority.
fn userinfo(username: &str, password: &str) -> String {
    format!(
        "{}:{}",
        utf8_percent_encode(username, USERINFO),
        utf8_percent_encode(password, USERINFO)
    )
}

/// The broker's default user as an Erlang `advanced.config`.
///
/// Not `rabbitmq.conf`: in its format `#` starts a comment wherever it stands and cannot be
/// escaped or quoted (rabbitmq-server issue 2345), and leading or trailing spaces are trimmed,
/// so a user-given password such as `a#b` would silently become `a`. Erlang binaries written
/// as byte lists (`<<97,35,98>>`) need no escaping at all and carry any UTF-8.
pub fn advanced_config(username: &str, password: &str) -> String {
    let binary = |s: &str| {
        let bytes: Vec<String> = s.bytes().map(|b| b.to_string()).collect();
        format!("<<{}>>", bytes.join(","))
    };
    format!(
        "%% Written by swappo-operator: the default user, applied to an empty database only.\n\
         [{{rabbit, [{{default_user, {}}}, {{default_pass, {}}}]}}].\n",
        binary(username),
        binary(password)
    )
}

/// The broker's user as RabbitMQ definitions (JSON): the user with its password, tagged
/// `administrator` (the operator and the autoscaler read the management API), the default
/// virtual host `/` and full permissions there. The broker imports them at every boot
/// (`load_definitions`): the user is created, or its password set, so a Secret re-created
/// with new credentials works after the restart its new [`Credentials::fingerprint`] causes,
/// on a database that already holds the old user. RabbitMQ hashes the `password` itself when
/// importing (`password_hash` is the other form). Definitions never remove a user: the old
/// one stays until deleted (`rabbitmqctl delete_user`).
pub fn definitions(username: &str, password: &str) -> String {
    let doc = serde_json::json!({
        "users": [{"name": username, "password": password, "tags": ["administrator"]}],
        "vhosts": [{"name": "/"}],
        "permissions": [{
            "user": username, "vhost": "/",
            "configure": ".*", "write": ".*", "read": ".*",
        }],
    });
    format!("{doc:#}\n")
}

/// Length of a generated password: 32 alphanumerics from a CSPRNG, about 190 bits
/// (DESIGN asks for at least 24). Alphanumerics need no escaping in URIs or `rabbitmq.conf`.
pub const PASSWORD_LEN: usize = 32;
/// Length of the random suffix of a generated user name.
const USERNAME_SUFFIX_LEN: usize = 12;
/// Length of a generated Erlang cookie (uppercase letters, as Erlang writes its own).
const COOKIE_LEN: usize = 32;

/// Broker credentials. `Debug` and `Display` never show the password or the cookie.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Erlang cookie (managed brokers only).
    pub erlang_cookie: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field(
                "erlang_cookie",
                &self.erlang_cookie.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Credentials {
    /// Fresh random credentials from `rng` (the thread-local CSPRNG in production).
    pub fn generate(rng: &mut impl Rng, with_cookie: bool) -> Self {
        let alnum = |rng: &mut dyn rand::RngCore, n: usize| -> String {
            rng.sample_iter(&Alphanumeric)
                .take(n)
                .map(char::from)
                .collect()
        };
        let suffix: String = alnum(rng, USERNAME_SUFFIX_LEN).to_ascii_lowercase();
        let upper = Uniform::new_inclusive(b'A', b'Z').expect("a valid range");
        let cookie: String = (0..COOKIE_LEN)
            .map(|_| char::from(rng.sample(upper)))
            .collect();
        Self {
            username: format!("swappo-{suffix}"),
            password: alnum(rng, PASSWORD_LEN),
            erlang_cookie: with_cookie.then_some(cookie),
        }
    }

    /// The credentials kept in an existing Secret, when it has a non-empty user and password
    /// (and cookie, when `with_cookie`).
    pub fn from_secret(secret: &Secret, with_cookie: bool) -> Option<Self> {
        let username = secret_value(secret, key::USERNAME)?;
        let password = secret_value(secret, key::PASSWORD)?;
        let erlang_cookie = match with_cookie {
            true => Some(secret_value(secret, key::ERLANG_COOKIE)?),
            false => None,
        };
        Some(Self {
            username,
            password,
            erlang_cookie,
        })
    }

    /// A fingerprint of these credentials for a pod template annotation, so new credentials
    /// restart the broker: HMAC-SHA256 of the user name and password keyed by the Erlang
    /// cookie, hex. Keyed because a plain hash of a user-given weak password could be guessed
    /// offline by anyone who reads the StatefulSet; the cookie is 32 random letters kept in the
    /// Secret. `None` without a cookie (an external broker: nothing to restart).
    pub fn fingerprint(&self) -> Option<String> {
        use hmac::{Hmac, Mac};
        let cookie = self.erlang_cookie.as_ref()?;
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(cookie.as_bytes()).expect("HMAC takes any key");
        // Lengths first, so no two different pairs make the same message.
        for part in [&self.username, &self.password] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        let tag = mac.finalize().into_bytes();
        Some(tag.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Takes `existing`'s credentials when complete, otherwise generates new ones.
    pub fn keep_or_generate(existing: Option<&Secret>, with_cookie: bool) -> (Self, bool) {
        match existing.and_then(|s| Self::from_secret(s, with_cookie)) {
            Some(kept) => (kept, false),
            None => (Self::generate(&mut rand::rng(), with_cookie), true),
        }
    }
}

/// A non-empty UTF-8 value of `key` in `secret` (from `data`, or `stringData` as written).
pub fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok());
    let from_string_data = || {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned()
    };
    from_data
        .or_else(from_string_data)
        .filter(|v| !v.is_empty())
}

/// Where clients reach the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// AMQP port.
    pub port: u16,
    /// Management API port.
    pub management_port: u16,
    /// AMQP over TLS.
    pub tls: bool,
}

impl Endpoint {
    /// The broker endpoint of `sm`: the external broker, or the in-cluster Service's DNS name.
    pub fn of(sm: &SwappoMessaging) -> Self {
        match &sm.spec.broker.external {
            Some(ext) => Self {
                host: ext.host.clone(),
                port: ext.port,
                management_port: ext.management_port,
                tls: ext.tls,
            },
            None => Self {
                host: format!(
                    "{}.{}.svc",
                    Names::of(sm).service,
                    sm.namespace().unwrap_or_else(|| "default".into())
                ),
                port: AMQP_PORT,
                management_port: MANAGEMENT_PORT,
                tls: false,
            },
        }
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The credentials Secret for `sm`.
pub fn credentials_secret(
    sm: &SwappoMessaging,
    creds: &Credentials,
    endpoint: &Endpoint,
) -> Secret {
    let Credentials {
        username,
        password,
        erlang_cookie,
    } = creds;
    let host = &endpoint.host;
    let scheme = if endpoint.tls { "amqps" } else { "amqp" };
    let auth = userinfo(username, password);
    let mut data: BTreeMap<&str, String> = BTreeMap::from([
        (key::USERNAME, username.clone()),
        (key::PASSWORD, password.clone()),
        (key::HOST, host.clone()),
        (key::PORT, endpoint.port.to_string()),
        (
            key::URI,
            format!("{scheme}://{auth}@{host}:{}/%2f", endpoint.port),
        ),
        (
            key::MANAGEMENT_URI,
            format!("http://{auth}@{host}:{}", endpoint.management_port),
        ),
    ]);
    if let Some(cookie) = erlang_cookie {
        data.insert(key::ERLANG_COOKIE, cookie.clone());
        data.insert(key::ADVANCED_CONFIG, advanced_config(username, password));
        data.insert(key::DEFINITIONS, definitions(username, password));
    }
    Secret {
        // Kept with a retained volume: a database whose user's password is lost is useless.
        metadata: retained_object_meta(sm, &Names::of(sm).secret),
        type_: Some("Opaque".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestExt;
    use rand::SeedableRng;

    fn creds() -> Credentials {
        Credentials::generate(&mut rand::rngs::StdRng::seed_from_u64(7), true)
    }

    fn value(secret: &Secret, key: &str) -> String {
        secret_value(secret, key).unwrap_or_else(|| panic!("key {key} missing"))
    }

    #[test]
    fn generated_passwords_are_long_random_and_never_the_well_known_defaults() {
        let mut rng = rand::rng();
        let a = Credentials::generate(&mut rng, true);
        let b = Credentials::generate(&mut rng, true);
        assert!(a.password.len() >= 24 && a.password.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.password, b.password);
        assert_ne!(a.username, b.username);
        assert!(!["guest", "admin", "password", "rabbitmq"].contains(&a.password.as_str()));
        assert_ne!(a.username, "guest");
        let cookie = a.erlang_cookie.unwrap();
        assert!(cookie.len() == 32 && cookie.chars().all(|c| c.is_ascii_uppercase()));
    }

    #[test]
    fn debug_output_redacts_the_password_and_cookie() {
        let c = creds();
        let shown = format!("{c:?}");
        assert!(!shown.contains(&c.password), "{shown}");
        assert!(
            !shown.contains(c.erlang_cookie.as_deref().unwrap()),
            "{shown}"
        );
        assert!(shown.contains(&c.username));
    }

    #[test]
    fn the_secret_has_every_key_services_read() {
        let sm = SwappoMessaging::test();
        let c = creds();
        let secret = credentials_secret(&sm, &c, &Endpoint::of(&sm));
        assert_eq!(secret.metadata.name.as_deref(), Some("test-rabbitmq"));
        assert_eq!(value(&secret, "username"), c.username);
        assert_eq!(value(&secret, "password"), c.password);
        assert_eq!(value(&secret, "host"), "test-rabbitmq.test-ns.svc");
        assert_eq!(value(&secret, "port"), "5672");
        assert_eq!(
            value(&secret, "uri"),
            format!(
                "amqp://{}:{}@test-rabbitmq.test-ns.svc:5672/%2f",
                c.username, c.password
            )
        );
        assert_eq!(
            value(&secret, "management-uri"),
            format!(
                "http://{}:{}@test-rabbitmq.test-ns.svc:15672",
                c.username, c.password
            )
        );
        assert_eq!(
            value(&secret, "erlang-cookie"),
            c.erlang_cookie.clone().unwrap()
        );
        assert_eq!(
            value(&secret, "advanced.config"),
            advanced_config(&c.username, &c.password)
        );
        assert_eq!(
            value(&secret, "definitions.json"),
            definitions(&c.username, &c.password)
        );
    }

    #[test]
    fn the_definitions_carry_the_user_its_password_and_full_rights_on_the_default_vhost() {
        let doc: serde_json::Value =
            serde_json::from_str(&definitions("ops:t@x", AWKWARD)).unwrap();
        assert_eq!(doc["users"][0]["name"], "ops:t@x");
        assert_eq!(doc["users"][0]["password"], AWKWARD);
        assert_eq!(
            doc["users"][0]["tags"],
            serde_json::json!(["administrator"])
        );
        assert_eq!(doc["vhosts"], serde_json::json!([{"name": "/"}]));
        let p = &doc["permissions"][0];
        assert_eq!(
            (&p["user"], &p["vhost"]),
            (&doc["users"][0]["name"], &"/".into())
        );
        assert_eq!(
            (&p["configure"], &p["write"], &p["read"]),
            (&".*".into(), &".*".into(), &".*".into())
        );
    }

    #[test]
    fn the_fingerprint_changes_with_the_credentials_and_reveals_neither() {
        let c = creds();
        let fp = c.fingerprint().unwrap();
        assert_eq!(fp.len(), 64);
        assert!(!fp.contains(&c.password) && !fp.contains(&c.username));
        assert_eq!(c.fingerprint(), creds().fingerprint(), "stable");
        let other_password = Credentials {
            password: "other".into(),
            ..creds()
        };
        let other_cookie = Credentials {
            erlang_cookie: Some("OTHER".into()),
            ..creds()
        };
        assert_ne!(other_password.fingerprint().unwrap(), fp);
        assert_ne!(other_cookie.fingerprint().unwrap(), fp);
        let external = Credentials {
            erlang_cookie: None,
            ..creds()
        };
        assert_eq!(external.fingerprint(), None);
    }

    #[test]
    fn an_existing_complete_secret_is_kept_not_regenerated() {
        let sm = SwappoMessaging::test();
        let c = creds();
        let existing = credentials_secret(&sm, &c, &Endpoint::of(&sm));
        let (kept, generated) = Credentials::keep_or_generate(Some(&existing), true);
        assert!(!generated);
        assert_eq!(kept, c);
    }

    #[test]
    fn a_secret_missing_its_password_gets_fresh_credentials() {
        let sm = SwappoMessaging::test();
        let mut existing = credentials_secret(&sm, &creds(), &Endpoint::of(&sm));
        existing.data.as_mut().unwrap().remove("password");
        let (_, generated) = Credentials::keep_or_generate(Some(&existing), true);
        assert!(generated);
        let (_, generated) = Credentials::keep_or_generate(None, true);
        assert!(generated);
    }

    #[test]
    fn an_external_broker_secret_points_at_it_and_has_no_cookie() {
        let sm = SwappoMessaging::test().with_external("rabbit.example.com", true);
        let c = Credentials {
            erlang_cookie: None,
            ..creds()
        };
        let secret = credentials_secret(&sm, &c, &Endpoint::of(&sm));
        assert_eq!(value(&secret, "host"), "rabbit.example.com");
        assert!(value(&secret, "uri").starts_with("amqps://"));
        assert!(secret_value(&secret, "erlang-cookie").is_none());
        assert!(secret_value(&secret, "advanced.config").is_none());
        assert!(secret_value(&secret, "definitions.json").is_none());
    }

    /// A password with every character that has a meaning in a URI or in `rabbitmq.conf`.
    const AWKWARD: &str = "p@ss:w/rd#1?x=%41&é ~";

    #[test]
    fn awkward_credentials_survive_the_uris_decoded_part_for_part() {
        let sm = SwappoMessaging::test();
        let c = Credentials {
            username: "ops:team@x/y".into(),
            password: AWKWARD.into(),
            erlang_cookie: Some("C".into()),
        };
        let secret = credentials_secret(&sm, &c, &Endpoint::of(&sm));
        for (k, scheme, port) in [("uri", "amqp", 5672), ("management-uri", "http", 15672)] {
            let uri = url::Url::parse(&value(&secret, k)).unwrap();
            assert_eq!(uri.scheme(), scheme);
            assert_eq!(uri.host_str(), Some("test-rabbitmq.test-ns.svc"), "{k}");
            assert_eq!(uri.port(), Some(port), "{k}");
            let decode = |s: &str| -> String {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .unwrap()
                    .into_owned()
            };
            assert_eq!(decode(uri.username()), c.username, "{k}");
            assert_eq!(decode(uri.password().unwrap()), c.password, "{k}");
            assert!(uri.fragment().is_none() && uri.query().is_none(), "{k}");
        }
        assert_eq!(
            url::Url::parse(&value(&secret, "uri")).unwrap().path(),
            "/%2f"
        );
    }

    #[test]
    fn the_default_user_config_carries_any_byte_without_escaping() {
        let conf = advanced_config("a\"b", AWKWARD);
        let term_line = conf.lines().nth(1).unwrap();
        assert!(term_line.starts_with("[{rabbit, [{default_user, <<97,34,98>>}"));
        let bytes: Vec<String> = AWKWARD.bytes().map(|b| b.to_string()).collect();
        assert!(term_line.contains(&format!("{{default_pass, <<{}>>}}", bytes.join(","))));
        // Nothing of the password appears as text: no quote or `#` can cut it short.
        assert!(!conf.contains("p@ss") && !conf.contains('#'));
        assert!(term_line.ends_with("]}]."));
    }
}
