//! The `az` and `azd` stand-ins run by the real `azure_identity` 1.0.0
//! credentials, and the shape of their answers.

use super::*;
use crate::identity::REDIS_AUDIENCE;
use azure_core::credentials::TokenCredential;
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, AzureDeveloperCliCredential, AzureDeveloperCliCredentialOptions,
    Executor,
};
use serde_json::Value;
use std::ffi::OsStr;
use std::future::Future;
use std::pin::Pin;
use std::process::Output;
use std::sync::Arc;

const SCOPE: &str = "https://redis.azure.com/.default";

/// Runs the credential's commands with the stand-ins first on `PATH` (the
/// test process's own environment stays as it is).
#[derive(Debug)]
struct WithPath(String);

impl Executor for WithPath {
    fn run<'a, 'b, 'c, 'd, 'f>(
        &'a self,
        program: &'b OsStr,
        args: &'c [&'d OsStr],
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Output>> + Send + 'f>>
    where
        'a: 'f,
        'b: 'f,
        'c: 'f,
        'd: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            tokio::process::Command::new(program)
                .args(args)
                .env("PATH", &self.0)
                .output()
                .await
        })
    }
}

/// `AzureCliCredential` runs the `az` stand-in with exactly its command
/// (in `/bin`), parses its answer, and the token is minted here.
#[tokio::test]
async fn azure_cli_credential_runs_the_stand_in() {
    let cli = DeveloperCli::start(CliConfig::default()).await.unwrap();
    let cred = AzureCliCredential::new(Some(AzureCliCredentialOptions {
        executor: Some(Arc::new(WithPath(cli.path_env()))),
        ..Default::default()
    }))
    .unwrap();
    let token = cred.get_token(&[SCOPE], None).await.unwrap();
    let claims = cli.claims(token.token.secret()).expect("minted here");
    assert_eq!(claims.aud, REDIS_AUDIENCE);
    assert_eq!(token.expires_on.unix_timestamp(), claims.exp);
    let calls = cli.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].tool, Tool::Az);
    assert_eq!(
        calls[0].args,
        ["account", "get-access-token", "-o", "json", "--scope", SCOPE]
    );
    assert_eq!((calls[0].cwd.as_str(), calls[0].exit_code), ("/bin", 0));

    cli.set_signed_in(Tool::Az, false);
    let err = cred.get_token(&[SCOPE], None).await.unwrap_err().to_string();
    assert!(err.contains("Please run 'az login' to setup account."), "{err}");
}

/// `AzureDeveloperCliCredential` runs the `azd` stand-in with exactly its
/// command and parses its RFC 3339 `expiresOn`; signed out, it reports azd's
/// own message.
#[tokio::test]
async fn azure_developer_cli_credential_runs_the_stand_in() {
    let cli = DeveloperCli::start(CliConfig::default()).await.unwrap();
    let cred = AzureDeveloperCliCredential::new(Some(AzureDeveloperCliCredentialOptions {
        executor: Some(Arc::new(WithPath(cli.path_env()))),
        ..Default::default()
    }))
    .unwrap();
    let token = cred.get_token(&[SCOPE], None).await.unwrap();
    let claims = cli.claims(token.token.secret()).expect("minted here");
    assert_eq!(token.expires_on.unix_timestamp(), claims.exp);
    let call = &cli.calls()[0];
    assert_eq!(call.tool, Tool::Azd);
    assert_eq!(
        call.args,
        ["auth", "token", "-o", "json", "--no-prompt", "--scope", SCOPE]
    );
    assert_eq!(call.cwd, "/bin");

    cli.set_signed_in(Tool::Azd, false);
    let err = cred.get_token(&[SCOPE], None).await.unwrap_err().to_string();
    assert!(
        err.contains("ERROR: not logged in, run `azd auth login` to login"),
        "{err}"
    );
}

/// `az`'s answer has the real tool's fields: `expiresOn` in local time
/// without a zone and `expires_on` in Unix seconds, the same instant; keys
/// sorted and indented by two; an argument it does not know exits 2.
#[tokio::test]
async fn az_answers_in_the_real_shape() {
    let cli = DeveloperCli::start(CliConfig::default()).await.unwrap();
    let run = |args: &'static str| {
        let path = cli.path_env();
        async move {
            tokio::process::Command::new("/bin/sh")
                .args(["-c", &format!("cd /bin && az {args}")])
                .env("PATH", path)
                .output()
                .await
                .unwrap()
        }
    };
    let out = run("account get-access-token -o json --scope https://redis.azure.com/.default").await;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("{\n  \"accessToken\": "), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "accessToken",
            "expiresOn",
            "expires_on",
            "subscription",
            "tenant",
            "tokenType"
        ]
    );
    let exp = body["expires_on"].as_i64().unwrap();
    let local = body["expiresOn"].as_str().unwrap();
    let (date, clock) = local.strip_suffix(".000000").unwrap().split_once(' ').unwrap();
    let num = |s: &str| {
        s.split(['-', ':'])
            .map(|n| n.parse::<i64>().unwrap())
            .collect::<Vec<_>>()
    };
    let (d, c) = (num(date), num(clock));
    let month = time::Month::try_from(d[1] as u8).unwrap();
    let naive = time::Date::from_calendar_date(d[0] as i32, month, d[2] as u8)
        .unwrap()
        .with_hms(c[0] as u8, c[1] as u8, c[2] as u8)
        .unwrap()
        .assume_utc()
        .unix_timestamp();
    let offset = naive - exp;
    assert!(
        offset % 900 == 0 && offset.abs() <= 14 * 3600,
        "{local} is {exp} in local time"
    );
    assert_eq!(body["tokenType"], "Bearer");

    let out = run("account get-access-token -o json --resource https://redis.azure.com").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized arguments: --resource"));
}
