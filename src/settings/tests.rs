use super::*;
use std::collections::HashMap;

fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Settings::from_lookup(|k| map.get(k).cloned())
}

fn choice(pairs: &[(&str, &str)]) -> Result<CredentialChoice, SettingsError> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    choose_credential(&|k: &str| map.get(k).cloned())
}

fn entra(s: &Settings) -> &EntraSettings {
    match &s.redis.auth {
        AuthSettings::Entra(e) => e,
        other => panic!("expected Entra ID, got {other:?}"),
    }
}

/// A bare host name gets the Azure Cache for Redis defaults.
#[test]
fn host_only_uses_defaults() {
    let s = load(&[("Redis__redisHostName", "c1.redis.cache.windows.net")]).unwrap();
    assert_eq!(s.redis.host, "c1.redis.cache.windows.net");
    assert_eq!(s.redis.port, 6380);
    assert!(s.redis.tls);
    let e = entra(&s);
    assert_eq!(e.scope, DEFAULT_SCOPE);
    assert_eq!(e.refresh_offset, Duration::from_secs(300));
    assert_eq!(e.principal_id, None);
    assert_eq!(e.credential, CredentialChoice::DeveloperTools);
    assert_eq!(s.listen_port, 8080);
    assert_eq!(s.max_value_bytes, 1024 * 1024);
    assert_eq!(s.deadlines, Deadlines::default());
    assert_eq!(s.log_format, LogFormat::Text);
}

/// Azure Managed Redis host names default to port 10000.
#[test]
fn managed_redis_defaults_to_10000() {
    let s = load(&[("Redis__redisHostName", "amr.westeurope.redis.azure.net")]).unwrap();
    assert_eq!(s.redis.port, 10000);
}

/// Every documented setting is read.
#[test]
fn all_settings_are_read() {
    let s = load(&[
        ("Redis__redisHostName", "h"),
        ("Redis__port", "7000"),
        ("Redis__ssl", "False"),
        ("Redis__principalId", "oid-1"),
        ("Redis__scope", "api://x/.default"),
        ("Redis__tokenRefreshOffsetSeconds", "8"),
        ("Redis__tokenTimeoutSeconds", "1.5"),
        ("Redis__connectTimeoutSeconds", "2"),
        ("Redis__commandTimeoutSeconds", "0.25"),
        ("CACHE_MAX_VALUE_BYTES", "10"),
        ("FUNCTIONS_HTTPWORKER_PORT", "1234"),
        ("LOG_FORMAT", "JSON"),
        ("SSL_CERT_FILE", "/tmp/ca.pem"),
        ("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", "w1"),
    ])
    .unwrap();
    assert_eq!(s.redis.port, 7000);
    assert!(!s.redis.tls);
    assert_eq!(s.redis.extra_ca_file, Some(PathBuf::from("/tmp/ca.pem")));
    let e = entra(&s);
    assert_eq!(e.principal_id.as_deref(), Some("oid-1"));
    assert_eq!(e.scope, "api://x/.default");
    assert_eq!(e.refresh_offset, Duration::from_secs(8));
    assert_eq!(s.deadlines.token_fetch, Duration::from_millis(1500));
    assert_eq!(s.deadlines.connect, Duration::from_secs(2));
    assert_eq!(s.deadlines.command, Duration::from_millis(250));
    assert_eq!(s.max_value_bytes, 10);
    assert_eq!(s.listen_port, 1234);
    assert_eq!(s.log_format, LogFormat::Json);
    assert_eq!(s.worker_id, "w1");
}

/// The custom handler port wins over the HTTP worker port.
#[test]
fn customhandler_port_wins() {
    let s = load(&[
        ("Redis__redisHostName", "h"),
        ("FUNCTIONS_CUSTOMHANDLER_PORT", "4000"),
        ("FUNCTIONS_HTTPWORKER_PORT", "5000"),
    ])
    .unwrap();
    assert_eq!(s.listen_port, 4000);
}

/// Each bad setting fails with its own name in the message.
#[test]
fn bad_settings_name_themselves() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "Redis__redisHostName"),
        (&[("Redis__redisHostName", "rediss://h:6380")], "Redis__redisHostName"),
        (&[("Redis__redisHostName", "h"), ("Redis__port", "0")], "Redis__port"),
        (
            &[("Redis__redisHostName", "h"), ("Redis__port", "70000")],
            "Redis__port",
        ),
        (&[("Redis__redisHostName", "h"), ("Redis__ssl", "maybe")], "Redis__ssl"),
        (
            &[
                ("Redis__redisHostName", "h"),
                ("Redis__tokenRefreshOffsetSeconds", "-1"),
            ],
            "Redis__tokenRefreshOffsetSeconds",
        ),
        (
            &[("Redis__redisHostName", "h"), ("Redis__commandTimeoutSeconds", "x")],
            "Redis__commandTimeoutSeconds",
        ),
        (
            &[("Redis__redisHostName", "h"), ("CACHE_MAX_VALUE_BYTES", "0")],
            "CACHE_MAX_VALUE_BYTES",
        ),
        (&[("Redis__redisHostName", "h"), ("LOG_FORMAT", "xml")], "LOG_FORMAT"),
        (
            &[("Redis__redisHostName", "h"), ("FUNCTIONS_CUSTOMHANDLER_PORT", "abc")],
            "FUNCTIONS_CUSTOMHANDLER_PORT",
        ),
        (
            &[("Redis__redisHostName", "h"), ("Redis", "h:6380,password=k")],
            "Redis",
        ),
        (&[("Redis", "h:6380,ssl=True")], "Redis"),
        (
            &[("Redis__redisHostName", "h"), ("Redis__credential", "magic")],
            "Redis__credential",
        ),
        (
            &[
                ("Redis__redisHostName", "h"),
                ("Redis__clientSecret", "s"),
                ("Redis__clientId", "c"),
            ],
            "Redis__tenantId",
        ),
        (
            &[
                ("Redis__redisHostName", "h"),
                ("Redis__clientSecret", "s"),
                ("Redis__tenantId", "t"),
            ],
            "Redis__clientId",
        ),
        (
            &[("Redis__redisHostName", "h"), ("Redis__credential", "workloadidentity")],
            "AZURE_FEDERATED_TOKEN_FILE",
        ),
        (
            &[
                ("Redis__redisHostName", "h"),
                ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
                ("AZURE_AUTHORITY_HOST", "http://login.microsoftonline.us"),
            ],
            "AZURE_AUTHORITY_HOST",
        ),
        (
            &[
                ("Redis__redisHostName", "h"),
                ("Redis__clientSecret", "s"),
                ("Redis__clientId", "c"),
                ("Redis__tenantId", "t"),
                ("AZURE_AUTHORITY_HOST", "login.microsoftonline.us"),
            ],
            "AZURE_AUTHORITY_HOST",
        ),
    ];
    for (pairs, name) in cases {
        let err = load(pairs).expect_err(&format!("{pairs:?} should fail"));
        assert_eq!(err.name, *name, "{pairs:?}: {err}");
        let line = err.to_string();
        assert!(line.starts_with(&format!("setting {name}:")), "{line}");
        assert!(!line.contains('\n'));
    }
}

/// The connection string form gives access-key auth, and the key stays hidden.
#[test]
fn connection_string_access_key() {
    let s = load(&[(
        "Redis",
        "c1.redis.cache.windows.net:6380,password=S3cr3tKey=,ssl=True,abortConnect=False",
    )])
    .unwrap();
    assert_eq!(s.redis.host, "c1.redis.cache.windows.net");
    assert_eq!(s.redis.port, 6380);
    assert!(s.redis.tls);
    match &s.redis.auth {
        AuthSettings::AccessKey { user, password } => {
            assert_eq!(user, &None);
            assert_eq!(password.expose(), "S3cr3tKey=");
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{s:?}").contains("S3cr3tKey"));
}

/// A client secret never shows in Debug output of the settings.
#[test]
fn client_secret_hidden_in_debug() {
    let s = load(&[
        ("Redis__redisHostName", "h"),
        ("Redis__clientSecret", "very-secret-value"),
        ("Redis__clientId", "app"),
        ("Redis__tenantId", "tenant"),
    ])
    .unwrap();
    assert!(!format!("{s:?}").contains("very-secret-value"));
}

/// Credential selection follows CONTRACT.md's order.
#[test]
fn credential_selection_order() {
    assert_eq!(choice(&[]).unwrap(), CredentialChoice::DeveloperTools);
    assert_eq!(
        choice(&[("IDENTITY_ENDPOINT", "http://x"), ("IDENTITY_HEADER", "h")]).unwrap(),
        CredentialChoice::ManagedIdentity { client_id: None }
    );
    assert_eq!(
        choice(&[("IDENTITY_ENDPOINT", "http://x")]).unwrap(),
        CredentialChoice::DeveloperTools,
        "an endpoint without its header is not App Service"
    );
    assert_eq!(
        choice(&[("Redis__clientId", "uami")]).unwrap(),
        CredentialChoice::ManagedIdentity {
            client_id: Some("uami".into())
        }
    );
    assert_eq!(
        choice(&[
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/t"),
            ("IDENTITY_ENDPOINT", "x"),
            ("IDENTITY_HEADER", "h")
        ])
        .unwrap(),
        CredentialChoice::WorkloadIdentity {
            client_id: None,
            tenant_id: None,
            authority: Authority::default(),
        }
    );
    let cs = choice(&[
        ("Redis__clientSecret", "s"),
        ("Redis__clientId", "app"),
        ("Redis__tenantId", "t"),
        ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
        ("IDENTITY_ENDPOINT", "x"),
        ("IDENTITY_HEADER", "h"),
    ])
    .unwrap();
    assert!(matches!(cs, CredentialChoice::ClientSecret { ref client_id, .. } if client_id == "app"));
    assert_eq!(
        choice(&[
            ("Redis__credential", "DeveloperTools"),
            ("IDENTITY_ENDPOINT", "x"),
            ("IDENTITY_HEADER", "h")
        ])
        .unwrap(),
        CredentialChoice::DeveloperTools
    );
    assert_eq!(
        choice(&[("Redis__credential", "managedidentity")]).unwrap(),
        CredentialChoice::ManagedIdentity { client_id: None }
    );
}

/// A client secret and workload identity sign in at `AZURE_AUTHORITY_HOST`
/// (another cloud) and trust `SSL_CERT_FILE` for it; the credentials that do
/// not call Entra ID themselves ignore it, even when it is malformed.
#[test]
fn authority_host_and_extra_ca_reach_the_entra_credentials() {
    let sovereign = Authority {
        host: Some("https://login.microsoftonline.us".into()),
        extra_ca_file: Some(PathBuf::from("/etc/proxy-ca.pem")),
    };
    let common = [
        ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us"),
        ("SSL_CERT_FILE", "/etc/proxy-ca.pem"),
    ];
    let secret = choice(&[
        common[0],
        common[1],
        ("Redis__clientSecret", "s"),
        ("Redis__clientId", "app"),
        ("Redis__tenantId", "t"),
    ])
    .unwrap();
    assert!(
        matches!(&secret, CredentialChoice::ClientSecret { authority, .. } if *authority == sovereign),
        "{secret:?}"
    );
    assert_eq!(
        choice(&[common[0], common[1], ("AZURE_FEDERATED_TOKEN_FILE", "/f")]).unwrap(),
        CredentialChoice::WorkloadIdentity {
            client_id: None,
            tenant_id: None,
            authority: sovereign,
        }
    );
    let scope = load(&[
        ("Redis__redisHostName", "c1.redis.cache.usgovcloudapi.net"),
        ("Redis__scope", "acca5fbb-b7e4-4009-81f1-37e38fd66d78/.default"),
    ])
    .unwrap();
    assert_eq!(entra(&scope).scope, "acca5fbb-b7e4-4009-81f1-37e38fd66d78/.default");
    for unused in [
        &[("AZURE_AUTHORITY_HOST", "not a url")][..],
        &[("AZURE_AUTHORITY_HOST", "not a url"), ("Redis__clientId", "uami")][..],
    ] {
        assert!(choice(unused).is_ok(), "{unused:?}");
    }
}
