//! `ordo mint-token`: dev and operator tokens.

use std::process::ExitCode;

use anyhow::Context;
use ordo_schemas::Role;
use ordo_service::JwtKeys;
use uuid::Uuid;

#[derive(clap::Args)]
pub struct Args {
    /// The principal's id (a new one when omitted).
    #[arg(long)]
    sub: Option<Uuid>,
    /// customer, merchant, admin or auditor.
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// Lifetime in hours.
    #[arg(long, default_value_t = 24)]
    ttl_hours: i64,
    /// `iss` of the token, as the APIs require it.
    #[arg(long, env = "ORDO_JWT_ISSUER")]
    issuer: Option<String>,
    /// `aud` of the token (the first of a comma-separated list), as the APIs require it.
    #[arg(long, env = "ORDO_JWT_AUDIENCE", value_delimiter = ',')]
    audience: Vec<String>,
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "customer" => Ok(Role::Customer),
        "merchant" => Ok(Role::Merchant),
        "admin" => Ok(Role::Admin),
        "auditor" => Ok(Role::Auditor),
        other => Err(format!("unknown role {other} (customer, merchant, admin, auditor)")),
    }
}

/// Signs a token with the HS256 secret from `ORDO_JWT_SECRET` (environment only, so it never
/// shows in a process listing or in `--help`).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = ordo_service::AuthSettings { issuer: args.issuer, audience: args.audience, ..Default::default() };
    let Some(secret) = crate::PROCESS.secret("JWT_SECRET") else {
        anyhow::bail!("ORDO_JWT_SECRET is not set: it is the secret the APIs verify tokens with");
    };
    let keys = JwtKeys::new(&settings, Some(secret.expose())).context("token settings")?;
    let sub = args.sub.unwrap_or_else(Uuid::new_v4);
    let token = keys.mint(sub, args.role, chrono::Duration::hours(args.ttl_hours)).context("sign token")?;
    eprintln!("sub={sub} role={}", args.role.as_str());
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
