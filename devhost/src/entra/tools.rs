//! What the `az` and `azd` stand-ins answer: the commands `azure_identity`
//! 1.0.0 runs, checked argument by argument, and the real tools' output.
//!
//! `AzureCliCredential` runs `az account get-access-token -o json --scope
//! <scope> [--tenant <id>] [--subscription "<id>"]` and reads `accessToken`
//! and `expires_on` (Unix seconds; Azure CLI 2.54 and later); the real tool
//! also prints `expiresOn` (local time, `%Y-%m-%d %H:%M:%S.%f`),
//! `subscription`, `tenant` and `tokenType`, keys sorted, indented by two.
//! `AzureDeveloperCliCredential` runs `azd auth token -o json --no-prompt
//! --scope <scope>… [--tenant-id <id>]` and reads `token` and `expiresOn`
//! (RFC 3339, UTC). Signed out, `az` prints "Please run 'az login' to setup
//! account." and `azd` a JSON console message, both exiting 1.

use crate::identity::Issuer;

/// The developer tool a call ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// The Azure CLI, `az`.
    Az,
    /// The Azure Developer CLI, `azd`.
    Azd,
}

impl Tool {
    /// The executable's name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Az => "az",
            Tool::Azd => "azd",
        }
    }
}

/// What a tool answers from: the signed-in account.
pub(super) struct Account<'a> {
    pub(super) issuer: &'a Issuer,
    pub(super) subscription_id: &'a str,
    /// Whether this tool is signed in.
    pub(super) signed_in: bool,
}

/// The exit code and the text for stdout (code 0) or stderr (otherwise).
pub(super) struct Answer {
    pub(super) code: i32,
    pub(super) out: String,
}

fn fail(code: i32, out: impl Into<String>) -> Answer {
    Answer { code, out: out.into() }
}

/// Flags and their values; `Err` names the first argument not understood.
fn flags<'a>(args: &'a [String], valued: &[&str], bare: &[&str]) -> Result<Vec<(&'a str, Option<&'a str>)>, &'a str> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if valued.contains(&arg.as_str()) {
            match it.next() {
                Some(v) => out.push((arg.as_str(), Some(v.as_str()))),
                None => return Err(arg),
            }
        } else if bare.contains(&arg.as_str()) {
            out.push((arg.as_str(), None));
        } else {
            return Err(arg);
        }
    }
    Ok(out)
}

fn values<'a>(flags: &[(&'a str, Option<&'a str>)], names: &[&str]) -> Vec<&'a str> {
    flags
        .iter()
        .filter(|(f, _)| names.contains(f))
        .filter_map(|(_, v)| *v)
        .collect()
}

/// `az account get-access-token …`.
pub(super) async fn az(s: Account<'_>, args: &[String]) -> Answer {
    let rest = match args {
        [a, b, rest @ ..] if a == "account" && b == "get-access-token" => rest,
        _ => {
            return fail(
                2,
                format!("ERROR: 'az {}' is not emulated by devhost\n", args.join(" ")),
            )
        }
    };
    let valued = ["-o", "--output", "--scope", "--tenant", "-t", "--subscription"];
    let f = match flags(rest, &valued, &[]) {
        Ok(f) => f,
        Err(arg) => return fail(2, format!("ERROR: unrecognized arguments: {arg}\n")),
    };
    if !s.signed_in {
        return fail(1, "ERROR: Please run 'az login' to setup account.\n");
    }
    if values(&f, &["-o", "--output"]) != ["json"] {
        return fail(2, "ERROR: devhost's az answers `-o json` only\n");
    }
    if let Some(t) = values(&f, &["--tenant", "-t"])
        .into_iter()
        .find(|t| *t != s.issuer.tenant_id())
    {
        return fail(1, format!("ERROR: AADSTS90002: Tenant '{t}' not found.\n"));
    }
    if let Some(sub) = values(&f, &["--subscription"])
        .into_iter()
        .find(|sub| *sub != s.subscription_id)
    {
        return fail(
            1,
            format!("ERROR: Subscription '{sub}' not found. Check the spelling and casing and try again.\n"),
        );
    }
    let Some(resource) = one_default_scope(&values(&f, &["--scope"])) else {
        return fail(
            1,
            "ERROR: AADSTS70011: The provided value for the input parameter 'scope' is not valid.\n",
        );
    };
    let issued = s.issuer.issue(resource).await;
    let body = serde_json::json!({
        "accessToken": issued.token,
        "expiresOn": local_time(issued.exp),
        "expires_on": issued.exp,
        "subscription": s.subscription_id,
        "tenant": s.issuer.tenant_id(),
        "tokenType": "Bearer",
    });
    Answer {
        code: 0,
        out: format!("{}\n", serde_json::to_string_pretty(&body).expect("JSON")),
    }
}

/// `azd auth token …`.
pub(super) async fn azd(s: Account<'_>, args: &[String]) -> Answer {
    let console = |message: &str| {
        let line = serde_json::json!({
            "type": "consoleMessage",
            "timestamp": rfc3339(crate::util::unix_now()),
            "data": { "message": message },
        });
        fail(1, format!("{line}\n"))
    };
    let rest = match args {
        [a, b, rest @ ..] if a == "auth" && b == "token" => rest,
        _ => {
            return console(&format!(
                "\nERROR: 'azd {}' is not emulated by devhost\n",
                args.join(" ")
            ))
        }
    };
    let f = match flags(rest, &["-o", "--output", "--scope", "--tenant-id"], &["--no-prompt"]) {
        Ok(f) => f,
        Err(arg) => return console(&format!("\nERROR: unknown flag: {arg}\n")),
    };
    if !s.signed_in {
        return console("\nERROR: not logged in, run `azd auth login` to login\n");
    }
    if values(&f, &["-o", "--output"]) != ["json"] {
        return console("\nERROR: devhost's azd answers `-o json` only\n");
    }
    if let Some(t) = values(&f, &["--tenant-id"])
        .into_iter()
        .find(|t| *t != s.issuer.tenant_id())
    {
        return console(&format!(
            "\nERROR: fetching token: AADSTS90002: Tenant '{t}' not found.\n"
        ));
    }
    let Some(resource) = one_default_scope(&values(&f, &["--scope"])) else {
        return console(
            "\nERROR: fetching token: AADSTS70011: The provided value for the input parameter 'scope' is not valid.\n",
        );
    };
    let issued = s.issuer.issue(resource).await;
    let body = serde_json::json!({ "expiresOn": rfc3339(issued.exp), "token": issued.token });
    Answer {
        code: 0,
        out: format!("{}\n", serde_json::to_string_pretty(&body).expect("JSON")),
    }
}

/// The resource of exactly one `<resource>/.default` scope (a token has one
/// audience).
fn one_default_scope<'a>(scopes: &[&'a str]) -> Option<&'a str> {
    match scopes {
        [one] => one.strip_suffix("/.default"),
        _ => None,
    }
}

/// Unix seconds as RFC 3339 in UTC, `2026-01-02T03:04:05Z`.
fn rfc3339(unix: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Unix seconds as az prints `expiresOn`: local time, microseconds, no zone.
fn local_time(unix: i64) -> String {
    let t = unix as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value; `localtime_r` only writes
    // into it and reads `t`, both alive for the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return rfc3339(unix).replace('T', " ").replace('Z', ".000000");
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.000000",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}
