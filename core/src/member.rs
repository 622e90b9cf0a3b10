//! Dashboard members: the people of one merchant who sign in to the dashboard, their roles, and
//! what each role may do (the one place that is written). Inviting, signing in and sessions are
//! `crate::members`'; the rows are `store::members`'.

use uuid::Uuid;

use crate::text_enum::text_enum;

/// What a member may do in the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read only.
    Viewer,
    /// Read everything; manage API keys and webhook endpoints.
    Developer,
    /// Everything: payouts, settings, the team.
    Owner,
}

text_enum! { Role as "role" { Viewer = "viewer", Developer = "developer", Owner = "owner" } }

/// Something a member asks to do. Reading is every role's; each change needs a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// See the merchant's pages.
    Read,
    /// Create and revoke API keys.
    ManageKeys,
    /// Create, change and delete webhook endpoints; redeliver events.
    ManageWebhooks,
    /// Create payouts and refunds, cancel invoices.
    MoveMoney,
    /// Company settings and the team (invite members, change roles).
    ManageMerchant,
}

impl Role {
    /// Whether this role may do `action`.
    pub fn may(self, action: Action) -> bool {
        match action {
            Action::Read => true,
            Action::ManageKeys | Action::ManageWebhooks => self >= Role::Developer,
            Action::MoveMoney | Action::ManageMerchant => self == Role::Owner,
        }
    }
}

/// A member of a merchant's team. (No `Debug` of the password hash: see the impl.)
#[derive(Clone, PartialEq, Eq)]
pub struct Member {
    pub id: Uuid,
    pub merchant_id: Uuid,
    /// Lower-cased.
    pub email: String,
    pub role: Role,
    /// argon2id in PHC string format; `None` until the invite is accepted.
    pub password_hash: Option<String>,
    pub created_at: i64,
    /// `cli` or `user:<id>`.
    pub invited_by: String,
    /// When the member's TOTP second factor was enabled; `None`: sign-in asks for the password only.
    pub totp_enabled_at: Option<i64>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.id)
            .field("merchant_id", &self.merchant_id)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("active", &self.password_hash.is_some())
            .field("totp", &self.totp_enabled_at.is_some())
            .finish_non_exhaustive()
    }
}

/// A signed-in browser's session, as looked up by its token.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The SHA-256 of the token (the cookie holds the token).
    pub id_hash: String,
    pub user_id: Uuid,
    /// Sent back in every form the session posts.
    pub csrf_token: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_seen_at: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_the_issue_says() {
        for role in Role::ALL {
            assert!(role.may(Action::Read));
        }
        assert!(!Role::Viewer.may(Action::ManageKeys) && !Role::Viewer.may(Action::ManageWebhooks));
        assert!(Role::Developer.may(Action::ManageKeys) && Role::Developer.may(Action::ManageWebhooks));
        assert!(!Role::Developer.may(Action::MoveMoney) && !Role::Developer.may(Action::ManageMerchant));
        assert!(Role::Owner.may(Action::MoveMoney) && Role::Owner.may(Action::ManageMerchant));
    }
}
