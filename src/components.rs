//! Implementations of the shop's worker traits.
//!
//! Each component is built fresh for every task (prototype scope) from singletons that
//! live as long as the worker: the session store, the outbox and the user directory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use celerity::{BuildError, Bytes, Component, Scope, TaskContext, TaskError, TaskResult};
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::tasks::{
    Accounts, EmailAddress, EmailReceipt, Mailer, Maintenance, Order, OrderOutcome, OrderStatus,
    Orders, Report, ReportFormat, Reports, Role, User,
};

/// Web sessions and when each was last seen (a singleton).
#[derive(Debug, Default)]
pub struct SessionStore {
    sessions: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl SessionStore {
    /// Records activity of session `id` at `at`.
    pub fn touch(&self, id: &str, at: DateTime<Utc>) {
        self.lock().insert(id.to_owned(), at);
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DateTime<Utc>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Messages handed to the mail server (a singleton standing in for an SMTP pool).
#[derive(Debug, Default)]
pub struct Outbox {
    sent: Mutex<Vec<(String, String)>>,
}

impl Outbox {
    /// `(recipient, subject)` of every message sent so far.
    pub fn sent(&self) -> Vec<(String, String)> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Registered users by email (a singleton standing in for a database).
#[derive(Debug, Default)]
pub struct UserDirectory {
    users: Mutex<BTreeMap<String, User>>,
}

/// Runs `tasks.ping` and `tasks.cleanup_sessions`.
pub struct MaintenanceTasks {
    sessions: Arc<SessionStore>,
}

impl Component for MaintenanceTasks {
    async fn build(scope: &Scope<'_>) -> Result<Self, BuildError> {
        Ok(MaintenanceTasks {
            sessions: scope.singleton()?,
        })
    }
}

impl Maintenance for MaintenanceTasks {
    async fn ping(&self, _ctx: &TaskContext) -> TaskResult<String> {
        Ok("pong".into())
    }

    async fn cleanup_sessions(
        &self,
        _ctx: &TaskContext,
        max_idle_minutes: u32,
        dry_run: bool,
    ) -> TaskResult<u64> {
        let cutoff = Utc::now() - chrono::Duration::minutes(i64::from(max_idle_minutes));
        let mut sessions = self.sessions.lock();
        let idle: Vec<String> = sessions
            .iter()
            .filter(|(_, seen)| **seen < cutoff)
            .map(|(id, _)| id.clone())
            .collect();
        if !dry_run {
            for id in &idle {
                sessions.remove(id);
            }
        }
        Ok(idle.len() as u64)
    }
}

/// Runs `tasks.send_email`.
pub struct SmtpMailer {
    outbox: Arc<Outbox>,
}

impl Component for SmtpMailer {
    async fn build(scope: &Scope<'_>) -> Result<Self, BuildError> {
        Ok(SmtpMailer {
            outbox: scope.singleton()?,
        })
    }
}

impl Mailer for SmtpMailer {
    async fn send_email(
        &self,
        ctx: &TaskContext,
        to: EmailAddress,
        subject: String,
        _body: String,
        cc: Vec<EmailAddress>,
        _tags: BTreeMap<String, String>,
    ) -> TaskResult<EmailReceipt> {
        let recipients: Vec<&EmailAddress> = std::iter::once(&to).chain(&cc).collect();
        if let Some(bad) = recipients.iter().find(|r| !r.email.contains('@')) {
            return Err(TaskError::new(
                "InvalidAddress",
                format!("`{}` is not an email address", bad.email),
            ));
        }
        let mut sent = self.outbox.sent.lock().unwrap_or_else(|p| p.into_inner());
        for recipient in &recipients {
            sent.push((recipient.email.clone(), subject.clone()));
        }
        Ok(EmailReceipt {
            message_id: format!("<{}@shop.example>", ctx.id),
            accepted: recipients.iter().map(|r| r.email.clone()).collect(),
            queued_at: Utc::now(),
        })
    }
}

/// Runs `tasks.create_user`.
pub struct AccountService {
    directory: Arc<UserDirectory>,
}

impl Component for AccountService {
    async fn build(scope: &Scope<'_>) -> Result<Self, BuildError> {
        Ok(AccountService {
            directory: scope.singleton()?,
        })
    }
}

impl Accounts for AccountService {
    async fn create_user(
        &self,
        _ctx: &TaskContext,
        email: String,
        role: Role,
        _display_name: Option<String>,
    ) -> TaskResult<User> {
        let mut users = self
            .directory
            .users
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if users.contains_key(&email) {
            return Err(TaskError::new(
                "UserExists",
                format!("a user with email {email} already exists"),
            ));
        }
        let user = User {
            id: Uuid::new_v4(),
            email: email.clone(),
            role,
            created_on: Utc::now().date_naive(),
        };
        users.insert(email, user.clone());
        Ok(user)
    }
}

/// Runs `tasks.process_order`.
pub struct OrderDesk;

impl Component for OrderDesk {
    async fn build(_scope: &Scope<'_>) -> Result<Self, BuildError> {
        Ok(OrderDesk)
    }
}

impl Orders for OrderDesk {
    async fn process_order(
        &self,
        _ctx: &TaskContext,
        order: Order,
        _notify: bool,
    ) -> TaskResult<OrderOutcome> {
        let total_cents = order
            .lines
            .iter()
            .map(|l| i64::from(l.quantity) * l.unit_price_cents)
            .sum();
        let mut warnings = Vec::new();
        if order.shipping.is_none() {
            warnings.push("no shipping address: collection in store".to_owned());
        }
        let status = if order.lines.is_empty() || order.lines.iter().any(|l| l.quantity == 0) {
            OrderStatus::Rejected
        } else if order.lines.iter().any(|l| l.sku.starts_with("BO-")) {
            OrderStatus::Backordered
        } else {
            OrderStatus::Accepted
        };
        Ok(OrderOutcome {
            order_id: order.id,
            status,
            total_cents,
            warnings,
        })
    }
}

/// Runs `tasks.generate_report`.
pub struct ReportBuilder;

impl Component for ReportBuilder {
    async fn build(_scope: &Scope<'_>) -> Result<Self, BuildError> {
        Ok(ReportBuilder)
    }
}

impl Reports for ReportBuilder {
    async fn generate_report(
        &self,
        _ctx: &TaskContext,
        name: String,
        format: ReportFormat,
        since: NaiveDate,
        until: Option<NaiveDate>,
        filters: serde_json::Value,
    ) -> TaskResult<Report> {
        let until = until.unwrap_or_else(|| Utc::now().date_naive());
        if until < since {
            return Err(TaskError::python(
                "ValueError",
                "builtins",
                format!("report range is empty: {since} is after {until}"),
            ));
        }
        let days = (until - since).num_days() as u64 + 1;
        let region = filters
            .get("region")
            .and_then(|r| r.as_str())
            .unwrap_or("all");
        let mut content = String::from("day,region,orders\n");
        for offset in 0..days {
            content.push_str(&format!(
                "{},{region},{}\n",
                since + chrono::Duration::days(offset as i64),
                offset * 3
            ));
        }
        Ok(Report {
            name,
            format,
            rows: days,
            totals: BTreeMap::from([(
                "orders".to_owned(),
                (0..days).map(|d| d as f64 * 3.0).sum(),
            )]),
            content: Bytes(content.into_bytes()),
        })
    }
}
