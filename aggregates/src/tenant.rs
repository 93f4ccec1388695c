//! The tenant: an organisation that owns users, datasets, keys and metering records, and whose
//! members hold roles (SPEC §2.6).
//!
//! The tenant keeps its members and invitations and enforces who may change them: owners and
//! admins invite, change roles and remove members; only an owner grants or takes `owner`, removes
//! an owner or hands ownership over; nobody changes their own roles; a tenant always keeps at
//! least one owner.

mod command;
mod error;
mod event;

pub use command::TenantCommand;
pub use error::TenantError;
pub use event::TenantEvent;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::{Email, InvitationId, Role, TenantId, TenantName, UserId};

/// How long an invitation may be accepted.
pub const INVITATION_TTL_DAYS: i64 = 7;

/// An invitation as the tenant knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub email: Email,
    pub roles: Vec<Role>,
    pub invited_by: UserId,
    pub expires_at: DateTime<Utc>,
    pub state: InvitationState,
}

/// Where an invitation stands (expiry is read against a clock: see [`Invitation::is_open`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvitationState {
    Pending,
    Accepted { user_id: UserId },
    Revoked,
}

impl Invitation {
    /// Whether the invitation may still be accepted at `at`.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        self.state == InvitationState::Pending && at < self.expires_at
    }
}

/// Whether these roles manage members (invite, change roles, remove): an owner's or an admin's.
pub fn manages_members(roles: &[Role]) -> bool {
    roles.contains(&Role::Owner) || roles.contains(&Role::Admin)
}

/// Why a caller who does not manage members is refused.
pub const NOT_A_MANAGER: &str = "Only an owner or an admin manages members.";

/// Roles as a member holds them: in canonical order, each once.
pub fn normalise_roles(mut roles: Vec<Role>) -> Vec<Role> {
    roles.sort();
    roles.dedup();
    roles
}

/// Tenant state, rebuilt from its events.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tenant {
    created: Option<(TenantId, TenantName)>,
    #[serde(default)]
    members: BTreeMap<UserId, Vec<Role>>,
    #[serde(default)]
    invitations: BTreeMap<InvitationId, Invitation>,
}

impl Aggregate for Tenant {
    const TYPE: &'static str = "tenant";
    type Command = TenantCommand;
    type Event = TenantEvent;
    type Error = TenantError;
    type Services = ();

    async fn handle(
        &mut self,
        command: TenantCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), TenantError> {
        if let TenantCommand::Create {
            tenant_id,
            name,
            owner,
        } = command
        {
            return match &self.created {
                // Creation is idempotent so that signup completion may be retried safely.
                Some((id, existing))
                    if *id == tenant_id
                        && *existing == name
                        && self.members.get(&owner) == Some(&vec![Role::Owner]) =>
                {
                    Ok(())
                }
                Some(_) => Err(TenantError::AlreadyExists),
                None => {
                    let event = TenantEvent::TenantCreated {
                        tenant_id,
                        name,
                        owner: Some(owner),
                    };
                    sink.write(event, self).await;
                    Ok(())
                }
            };
        }
        if self.created.is_none() {
            return Err(TenantError::NotFound);
        }
        if let Some(event) = self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: TenantEvent) {
        match event {
            TenantEvent::TenantCreated {
                tenant_id,
                name,
                owner,
            } => {
                self.created = Some((tenant_id, name));
                if let Some(owner) = owner {
                    self.members.insert(owner, vec![Role::Owner]);
                }
            }
            TenantEvent::FounderRecorded { user_id } => {
                self.members.insert(user_id, vec![Role::Owner]);
            }
            TenantEvent::MemberInvited {
                invitation_id,
                email,
                roles,
                invited_by,
                expires_at,
                ..
            } => {
                let invitation = Invitation {
                    email,
                    roles,
                    invited_by,
                    expires_at,
                    state: InvitationState::Pending,
                };
                self.invitations.insert(invitation_id, invitation);
            }
            TenantEvent::InvitationAccepted {
                invitation_id,
                user_id,
                roles,
                ..
            } => {
                if let Some(invitation) = self.invitations.get_mut(&invitation_id) {
                    invitation.state = InvitationState::Accepted {
                        user_id: user_id.clone(),
                    };
                }
                self.members.insert(user_id, roles);
            }
            TenantEvent::InvitationRevoked { invitation_id, .. } => {
                if let Some(invitation) = self.invitations.get_mut(&invitation_id) {
                    invitation.state = InvitationState::Revoked;
                }
            }
            TenantEvent::MemberRolesChanged { user_id, roles, .. } => {
                self.members.insert(user_id, roles);
            }
            TenantEvent::MemberRemoved { user_id, .. } => {
                self.members.remove(&user_id);
            }
            TenantEvent::OwnershipTransferred {
                from,
                to,
                from_roles,
                to_roles,
            } => {
                self.members.insert(from, from_roles);
                self.members.insert(to, to_roles);
            }
        }
    }
}

impl Tenant {
    /// The tenant's name, once created.
    pub fn name(&self) -> Option<&TenantName> {
        self.created.as_ref().map(|(_, name)| name)
    }

    /// A member's roles, if they are a member.
    pub fn roles_of(&self, user_id: &UserId) -> Option<&[Role]> {
        self.members.get(user_id).map(Vec::as_slice)
    }

    /// Whether the tenant knows its members (tenants created before members were recorded do
    /// not, until their founder is recorded).
    pub fn knows_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// An invitation of this tenant.
    pub fn invitation(&self, invitation_id: &InvitationId) -> Option<&Invitation> {
        self.invitations.get(invitation_id)
    }

    /// The event a membership command records, if any (`None`: it changes nothing).
    fn decide(&self, command: TenantCommand) -> Result<Option<TenantEvent>, TenantError> {
        match command {
            TenantCommand::Create { .. } => unreachable!("handled before"),
            TenantCommand::RecordFounder { user_id } => {
                if self.knows_members() {
                    return Err(TenantError::MembersRecorded);
                }
                Ok(Some(TenantEvent::FounderRecorded { user_id }))
            }
            TenantCommand::Invite {
                invitation_id,
                email,
                roles,
                by,
                at,
            } => {
                let roles = self.grantable(&by, roles)?;
                if self
                    .invitations
                    .values()
                    .any(|i| i.email == email && i.is_open(at))
                {
                    return Err(TenantError::AlreadyInvited);
                }
                Ok(Some(TenantEvent::MemberInvited {
                    invitation_id,
                    email,
                    roles,
                    invited_by: by,
                    invited_at: at,
                    expires_at: at + Duration::days(INVITATION_TTL_DAYS),
                }))
            }
            TenantCommand::RevokeInvitation {
                invitation_id,
                by,
                at,
            } => {
                self.manager(&by)?;
                let invitation = self
                    .invitations
                    .get(&invitation_id)
                    .ok_or(TenantError::UnknownInvitation)?;
                match invitation.state {
                    InvitationState::Revoked => Ok(None),
                    InvitationState::Accepted { .. } => Err(TenantError::InvitationAccepted),
                    InvitationState::Pending => Ok(Some(TenantEvent::InvitationRevoked {
                        invitation_id,
                        revoked_by: by,
                        revoked_at: at,
                    })),
                }
            }
            TenantCommand::AcceptInvitation {
                invitation_id,
                user_id,
                at,
            } => {
                let invitation = self
                    .invitations
                    .get(&invitation_id)
                    .ok_or(TenantError::UnknownInvitation)?;
                match &invitation.state {
                    InvitationState::Accepted { user_id: by } if *by == user_id => Ok(None),
                    _ if !invitation.is_open(at) => Err(TenantError::InvitationExpired),
                    _ => Ok(Some(TenantEvent::InvitationAccepted {
                        invitation_id,
                        user_id,
                        roles: invitation.roles.clone(),
                        invited_by: invitation.invited_by.clone(),
                        accepted_at: at,
                    })),
                }
            }
            TenantCommand::ChangeRoles { user_id, roles, by } => {
                let roles = self.grantable(&by, roles)?;
                let current = self.member(&user_id)?;
                if current.contains(&Role::Owner) != roles.contains(&Role::Owner) {
                    self.owner(&by, "Only an owner grants or takes the owner role.")?;
                }
                if !roles.contains(&Role::Owner) && self.is_last_owner(&user_id) {
                    return Err(TenantError::LastOwner);
                }
                if user_id == by {
                    return Err(TenantError::Forbidden("Nobody changes their own roles."));
                }
                if *current == roles {
                    return Ok(None);
                }
                Ok(Some(TenantEvent::MemberRolesChanged {
                    user_id,
                    roles,
                    changed_by: by,
                }))
            }
            TenantCommand::RemoveMember {
                user_id,
                by,
                revoke_keys,
            } => {
                self.manager(&by)?;
                let current = self.member(&user_id)?;
                if current.contains(&Role::Owner) && user_id != by {
                    self.owner(&by, "Only an owner removes an owner.")?;
                }
                if self.is_last_owner(&user_id) {
                    return Err(TenantError::LastOwner);
                }
                Ok(Some(TenantEvent::MemberRemoved {
                    user_id,
                    removed_by: by,
                    revoke_keys,
                }))
            }
            TenantCommand::TransferOwnership { to, by } => {
                self.owner(&by, "Only an owner transfers ownership.")?;
                let target = self.member(&to)?;
                if to == by {
                    return Err(TenantError::Forbidden("Nobody changes their own roles."));
                }
                let mut to_roles = target.to_vec();
                to_roles.push(Role::Owner);
                let mut from_roles: Vec<Role> = self.members[&by]
                    .iter()
                    .copied()
                    .filter(|r| *r != Role::Owner)
                    .collect();
                from_roles.push(Role::Admin);
                Ok(Some(TenantEvent::OwnershipTransferred {
                    from: by,
                    to,
                    from_roles: normalise_roles(from_roles),
                    to_roles: normalise_roles(to_roles),
                }))
            }
        }
    }

    fn member(&self, user_id: &UserId) -> Result<&Vec<Role>, TenantError> {
        self.members.get(user_id).ok_or(TenantError::UnknownMember)
    }

    /// The caller's roles, if they are an owner or an admin.
    fn manager(&self, by: &UserId) -> Result<&[Role], TenantError> {
        match self.members.get(by) {
            Some(roles) if manages_members(roles) => Ok(roles),
            _ => Err(TenantError::Forbidden(NOT_A_MANAGER)),
        }
    }

    fn owner(&self, by: &UserId, refusal: &'static str) -> Result<(), TenantError> {
        match self.members.get(by) {
            Some(roles) if roles.contains(&Role::Owner) => Ok(()),
            _ => Err(TenantError::Forbidden(refusal)),
        }
    }

    /// The roles a manager may give: at least one, and `owner` only from an owner.
    fn grantable(&self, by: &UserId, roles: Vec<Role>) -> Result<Vec<Role>, TenantError> {
        self.manager(by)?;
        let roles = normalise_roles(roles);
        if roles.is_empty() {
            return Err(TenantError::NoRoles);
        }
        if roles.contains(&Role::Owner) {
            self.owner(by, "Only an owner grants the owner role.")?;
        }
        Ok(roles)
    }

    fn is_last_owner(&self, user_id: &UserId) -> bool {
        let owners = self
            .members
            .iter()
            .filter(|(_, roles)| roles.contains(&Role::Owner));
        let mut owners = owners.map(|(id, _)| id);
        owners.next() == Some(user_id) && owners.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use Role::*;

    type TenantTest = TestFramework<Tenant>;

    fn at() -> DateTime<Utc> {
        crate::timestamp::parse("2026-12-01T12:00:00Z").unwrap()
    }

    fn user(n: u128) -> UserId {
        UserId::from_bits(n)
    }

    fn invitation(n: u128) -> InvitationId {
        InvitationId::from_bits(n)
    }

    fn email(name: &str) -> Email {
        Email::parse(&format!("{name}@example.com")).unwrap()
    }

    fn created() -> (TenantId, TenantName, TenantEvent) {
        let id = TenantId::generate();
        let name = TenantName::parse("Acme").unwrap();
        let event = TenantEvent::TenantCreated {
            tenant_id: id.clone(),
            name: name.clone(),
            owner: Some(user(1)),
        };
        (id, name, event)
    }

    /// A tenant owned by user 1 whose members `(n, roles)` joined by invitations sent by user 1.
    fn team(members: &[(u128, &[Role])]) -> Vec<TenantEvent> {
        let mut events = vec![created().2];
        for (n, roles) in members {
            events.push(invited(*n, roles));
            events.push(TenantEvent::InvitationAccepted {
                invitation_id: invitation(*n),
                user_id: user(*n),
                roles: roles.to_vec(),
                invited_by: user(1),
                accepted_at: at(),
            });
        }
        events
    }

    fn invited(n: u128, roles: &[Role]) -> TenantEvent {
        TenantEvent::MemberInvited {
            invitation_id: invitation(n),
            email: email(&format!("member{n}")),
            roles: roles.to_vec(),
            invited_by: user(1),
            invited_at: at(),
            expires_at: at() + Duration::days(INVITATION_TTL_DAYS),
        }
    }

    fn invite(n: u128, roles: &[Role], by: u128) -> TenantCommand {
        TenantCommand::Invite {
            invitation_id: invitation(n),
            email: email(&format!("member{n}")),
            roles: roles.to_vec(),
            by: user(by),
            at: at(),
        }
    }

    fn change(n: u128, roles: &[Role], by: u128) -> TenantCommand {
        TenantCommand::ChangeRoles {
            user_id: user(n),
            roles: roles.to_vec(),
            by: user(by),
        }
    }

    fn remove(n: u128, by: u128) -> TenantCommand {
        TenantCommand::RemoveMember {
            user_id: user(n),
            by: user(by),
            revoke_keys: false,
        }
    }

    fn state_after(events: Vec<TenantEvent>) -> Tenant {
        let mut tenant = Tenant::default();
        events.into_iter().for_each(|e| tenant.apply(e));
        tenant
    }

    #[test]
    fn creating_a_tenant_records_it_with_its_owner() {
        let (tenant_id, name, event) = created();
        TenantTest::with(())
            .given_no_previous_events()
            .when(TenantCommand::Create {
                tenant_id,
                name,
                owner: user(1),
            })
            .then_expect_events(vec![event]);
    }

    #[test]
    fn creating_the_same_tenant_again_changes_nothing() {
        let (tenant_id, name, event) = created();
        TenantTest::with(())
            .given(vec![event])
            .when(TenantCommand::Create {
                tenant_id,
                name,
                owner: user(1),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_state_knows_the_name_and_the_owner() {
        let (_, name, event) = created();
        let mut tenant = Tenant::default();
        assert_eq!(tenant.name(), None);
        assert!(!tenant.knows_members());
        tenant.apply(event);
        assert_eq!(tenant.name(), Some(&name));
        assert_eq!(tenant.roles_of(&user(1)), Some(&[Owner][..]));
        assert!(tenant.knows_members());
    }

    #[test]
    fn creating_over_another_tenant_or_owner_is_refused() {
        let (tenant_id, name, event) = created();
        for (tenant_id, name, owner) in [
            (TenantId::generate(), name.clone(), user(1)),
            (
                tenant_id.clone(),
                TenantName::parse("Other").unwrap(),
                user(1),
            ),
            (tenant_id, name, user(2)),
        ] {
            TenantTest::with(())
                .given(vec![event.clone()])
                .when(TenantCommand::Create {
                    tenant_id,
                    name,
                    owner,
                })
                .then_expect_error(TenantError::AlreadyExists);
        }
    }

    #[test]
    fn membership_commands_on_an_unknown_tenant_are_refused() {
        TenantTest::with(())
            .given_no_previous_events()
            .when(invite(2, &[Viewer], 1))
            .then_expect_error(TenantError::NotFound);
    }

    #[test]
    fn a_tenant_created_before_members_were_recorded_learns_its_founder_once() {
        let legacy = TenantEvent::TenantCreated {
            tenant_id: TenantId::generate(),
            name: TenantName::parse("Old").unwrap(),
            owner: None,
        };
        assert!(!state_after(vec![legacy.clone()]).knows_members());
        TenantTest::with(())
            .given(vec![legacy.clone()])
            .when(TenantCommand::RecordFounder { user_id: user(1) })
            .then_expect_events(vec![TenantEvent::FounderRecorded { user_id: user(1) }]);
        let founded = vec![legacy, TenantEvent::FounderRecorded { user_id: user(1) }];
        assert_eq!(
            state_after(founded.clone()).roles_of(&user(1)),
            Some(&[Owner][..])
        );
        TenantTest::with(())
            .given(founded)
            .when(TenantCommand::RecordFounder { user_id: user(2) })
            .then_expect_error(TenantError::MembersRecorded);
        TenantTest::with(())
            .given(team(&[]))
            .when(TenantCommand::RecordFounder { user_id: user(2) })
            .then_expect_error(TenantError::MembersRecorded);
    }

    #[test]
    fn an_owner_or_admin_invites_with_normalised_roles_for_seven_days() {
        for by in [1, 2] {
            TenantTest::with(())
                .given(team(&[(2, &[Admin])]))
                .when(invite(3, &[Viewer, SellerManager, Viewer], by))
                .then_expect_events(vec![TenantEvent::MemberInvited {
                    invitation_id: invitation(3),
                    email: email("member3"),
                    roles: vec![SellerManager, Viewer],
                    invited_by: user(by),
                    invited_at: at(),
                    expires_at: at() + Duration::days(7),
                }]);
        }
    }

    #[test]
    fn only_an_owner_invites_an_owner() {
        TenantTest::with(())
            .given(team(&[(2, &[Admin])]))
            .when(invite(3, &[Owner], 2))
            .then_expect_error(TenantError::Forbidden(
                "Only an owner grants the owner role.",
            ));
        TenantTest::with(())
            .given(team(&[]))
            .when(invite(3, &[Owner], 1))
            .then_expect_events(vec![TenantEvent::MemberInvited {
                invitation_id: invitation(3),
                email: email("member3"),
                roles: vec![Owner],
                invited_by: user(1),
                invited_at: at(),
                expires_at: at() + Duration::days(7),
            }]);
    }

    #[test]
    fn other_roles_and_strangers_cannot_manage_members() {
        let refusal = TenantError::Forbidden(NOT_A_MANAGER);
        let roles: &[Role] = &[SellerManager, BuyerManager, Operator, Viewer];
        for role in roles {
            let given = team(&[(2, &[*role]), (3, &[Viewer])]);
            for command in [
                invite(4, &[Viewer], 2),
                invite(4, &[Viewer], 99),
                change(3, &[Operator], 2),
                remove(3, 2),
                TenantCommand::RevokeInvitation {
                    invitation_id: invitation(3),
                    by: user(2),
                    at: at(),
                },
            ] {
                TenantTest::with(())
                    .given(given.clone())
                    .when(command)
                    .then_expect_error(refusal.clone());
            }
        }
    }

    #[test]
    fn owners_and_admins_manage_members() {
        for (roles, manages) in [
            (&[Owner][..], true),
            (&[Admin], true),
            (&[Viewer, Admin], true),
            (&[SellerManager, BuyerManager, Operator, Viewer], false),
            (&[], false),
        ] {
            assert_eq!(manages_members(roles), manages, "{roles:?}");
        }
    }

    #[test]
    fn an_invitation_needs_a_role() {
        TenantTest::with(())
            .given(team(&[]))
            .when(invite(2, &[], 1))
            .then_expect_error(TenantError::NoRoles);
        TenantTest::with(())
            .given(team(&[(2, &[Viewer])]))
            .when(change(2, &[], 1))
            .then_expect_error(TenantError::NoRoles);
    }

    #[test]
    fn an_address_has_one_open_invitation_at_a_time() {
        let given = vec![created().2, invited(2, &[Viewer])];
        TenantTest::with(())
            .given(given.clone())
            .when(invite(2, &[Operator], 1))
            .then_expect_error(TenantError::AlreadyInvited);
        // Once it expired, was revoked or was used, the address may be invited again.
        let later = TenantCommand::Invite {
            invitation_id: invitation(3),
            email: email("member2"),
            roles: vec![Viewer],
            by: user(1),
            at: at() + Duration::days(INVITATION_TTL_DAYS),
        };
        TenantTest::with(())
            .given(given.clone())
            .when(later)
            .then_expect_events(vec![TenantEvent::MemberInvited {
                invitation_id: invitation(3),
                email: email("member2"),
                roles: vec![Viewer],
                invited_by: user(1),
                invited_at: at() + Duration::days(INVITATION_TTL_DAYS),
                expires_at: at() + Duration::days(2 * INVITATION_TTL_DAYS),
            }]);
        let mut revoked = given;
        revoked.push(TenantEvent::InvitationRevoked {
            invitation_id: invitation(2),
            revoked_by: user(1),
            revoked_at: at(),
        });
        TenantTest::with(())
            .given(revoked)
            .when(TenantCommand::Invite {
                invitation_id: invitation(3),
                email: email("member2"),
                roles: vec![Viewer],
                by: user(1),
                at: at(),
            })
            .then_expect_events(vec![TenantEvent::MemberInvited {
                invitation_id: invitation(3),
                email: email("member2"),
                roles: vec![Viewer],
                invited_by: user(1),
                invited_at: at(),
                expires_at: at() + Duration::days(INVITATION_TTL_DAYS),
            }]);
    }

    fn accept(n: u128, user_id: u128, at: DateTime<Utc>) -> TenantCommand {
        TenantCommand::AcceptInvitation {
            invitation_id: invitation(n),
            user_id: user(user_id),
            at,
        }
    }

    #[test]
    fn accepting_an_open_invitation_makes_a_member_with_its_roles() {
        let given = vec![created().2, invited(2, &[BuyerManager, Viewer])];
        let accepted = TenantEvent::InvitationAccepted {
            invitation_id: invitation(2),
            user_id: user(20),
            roles: vec![BuyerManager, Viewer],
            invited_by: user(1),
            accepted_at: at(),
        };
        TenantTest::with(())
            .given(given.clone())
            .when(accept(2, 20, at()))
            .then_expect_events(vec![accepted.clone()]);
        let mut after = given;
        after.push(accepted);
        let tenant = state_after(after.clone());
        assert_eq!(
            tenant.roles_of(&user(20)),
            Some(&[BuyerManager, Viewer][..])
        );
        assert_eq!(
            tenant.invitation(&invitation(2)).map(|i| i.state.clone()),
            Some(InvitationState::Accepted { user_id: user(20) })
        );
        // The same acceptance again (a retried completion) changes nothing; another is refused.
        TenantTest::with(())
            .given(after.clone())
            .when(accept(2, 20, at()))
            .then_expect_events(vec![]);
        TenantTest::with(())
            .given(after)
            .when(accept(2, 21, at()))
            .then_expect_error(TenantError::InvitationExpired);
    }

    #[test]
    fn an_expired_revoked_or_unknown_invitation_cannot_be_accepted() {
        let given = vec![created().2, invited(2, &[Viewer])];
        let expiry = at() + Duration::days(INVITATION_TTL_DAYS);
        TenantTest::with(())
            .given(given.clone())
            .when(accept(2, 20, expiry - Duration::microseconds(1)))
            .then_expect_events(vec![TenantEvent::InvitationAccepted {
                invitation_id: invitation(2),
                user_id: user(20),
                roles: vec![Viewer],
                invited_by: user(1),
                accepted_at: expiry - Duration::microseconds(1),
            }]);
        TenantTest::with(())
            .given(given.clone())
            .when(accept(2, 20, expiry))
            .then_expect_error(TenantError::InvitationExpired);
        let mut revoked = given.clone();
        revoked.push(TenantEvent::InvitationRevoked {
            invitation_id: invitation(2),
            revoked_by: user(1),
            revoked_at: at(),
        });
        TenantTest::with(())
            .given(revoked)
            .when(accept(2, 20, at()))
            .then_expect_error(TenantError::InvitationExpired);
        TenantTest::with(())
            .given(given)
            .when(accept(3, 20, at()))
            .then_expect_error(TenantError::UnknownInvitation);
    }

    #[test]
    fn revoking_withdraws_a_pending_invitation_once_and_never_an_accepted_one() {
        let revoke = |n| TenantCommand::RevokeInvitation {
            invitation_id: invitation(n),
            by: user(1),
            at: at(),
        };
        let revoked = TenantEvent::InvitationRevoked {
            invitation_id: invitation(2),
            revoked_by: user(1),
            revoked_at: at(),
        };
        let given = vec![created().2, invited(2, &[Viewer])];
        TenantTest::with(())
            .given(given.clone())
            .when(revoke(2))
            .then_expect_events(vec![revoked.clone()]);
        let mut after = given;
        after.push(revoked);
        assert_eq!(
            state_after(after.clone())
                .invitation(&invitation(2))
                .unwrap()
                .state,
            InvitationState::Revoked
        );
        TenantTest::with(())
            .given(after)
            .when(revoke(2))
            .then_expect_events(vec![]);
        TenantTest::with(())
            .given(team(&[(2, &[Viewer])]))
            .when(revoke(2))
            .then_expect_error(TenantError::InvitationAccepted);
        TenantTest::with(())
            .given(team(&[]))
            .when(revoke(2))
            .then_expect_error(TenantError::UnknownInvitation);
    }

    #[test]
    fn a_manager_changes_another_members_roles() {
        for by in [1, 2] {
            TenantTest::with(())
                .given(team(&[(2, &[Admin]), (3, &[Viewer])]))
                .when(change(3, &[Operator, SellerManager], by))
                .then_expect_events(vec![TenantEvent::MemberRolesChanged {
                    user_id: user(3),
                    roles: vec![SellerManager, Operator],
                    changed_by: user(by),
                }]);
        }
        let changed = TenantEvent::MemberRolesChanged {
            user_id: user(3),
            roles: vec![Operator],
            changed_by: user(1),
        };
        let mut after = team(&[(3, &[Viewer])]);
        after.push(changed);
        assert_eq!(
            state_after(after.clone()).roles_of(&user(3)),
            Some(&[Operator][..])
        );
        TenantTest::with(())
            .given(after)
            .when(change(3, &[Operator], 1))
            .then_expect_events(vec![]);
        TenantTest::with(())
            .given(team(&[]))
            .when(change(3, &[Viewer], 1))
            .then_expect_error(TenantError::UnknownMember);
    }

    #[test]
    fn only_an_owner_grants_or_takes_the_owner_role() {
        let given = team(&[(2, &[Admin]), (3, &[Viewer]), (4, &[Owner])]);
        for (command, refusal) in [
            (
                change(3, &[Owner], 2),
                "Only an owner grants the owner role.",
            ),
            (
                change(4, &[Admin], 2),
                "Only an owner grants or takes the owner role.",
            ),
        ] {
            TenantTest::with(())
                .given(given.clone())
                .when(command)
                .then_expect_error(TenantError::Forbidden(refusal));
        }
        TenantTest::with(())
            .given(given.clone())
            .when(change(3, &[Owner], 1))
            .then_expect_events(vec![TenantEvent::MemberRolesChanged {
                user_id: user(3),
                roles: vec![Owner],
                changed_by: user(1),
            }]);
        TenantTest::with(())
            .given(given)
            .when(change(4, &[Admin], 1))
            .then_expect_events(vec![TenantEvent::MemberRolesChanged {
                user_id: user(4),
                roles: vec![Admin],
                changed_by: user(1),
            }]);
    }

    #[test]
    fn nobody_changes_their_own_roles() {
        let refusal = TenantError::Forbidden("Nobody changes their own roles.");
        let given = team(&[(2, &[Admin]), (4, &[Owner])]);
        for command in [
            change(2, &[Admin, Viewer], 2),
            change(1, &[Owner, Viewer], 1),
        ] {
            TenantTest::with(())
                .given(given.clone())
                .when(command)
                .then_expect_error(refusal.clone());
        }
        TenantTest::with(())
            .given(given)
            .when(change(1, &[Admin], 1))
            .then_expect_error(refusal);
    }

    #[test]
    fn the_last_owner_can_be_neither_demoted_nor_removed() {
        TenantTest::with(())
            .given(team(&[(2, &[Admin])]))
            .when(change(1, &[Admin], 1))
            .then_expect_error(TenantError::LastOwner);
        TenantTest::with(())
            .given(team(&[(2, &[Admin])]))
            .when(remove(1, 1))
            .then_expect_error(TenantError::LastOwner);
        // With a second owner, the first may leave.
        TenantTest::with(())
            .given(team(&[(2, &[Owner])]))
            .when(remove(1, 1))
            .then_expect_events(vec![TenantEvent::MemberRemoved {
                user_id: user(1),
                removed_by: user(1),
                revoke_keys: false,
            }]);
    }

    #[test]
    fn a_manager_removes_a_member_and_an_admin_never_an_owner() {
        let given = team(&[(2, &[Admin]), (3, &[Viewer]), (4, &[Owner])]);
        for by in [1, 2] {
            TenantTest::with(())
                .given(given.clone())
                .when(TenantCommand::RemoveMember {
                    user_id: user(3),
                    by: user(by),
                    revoke_keys: true,
                })
                .then_expect_events(vec![TenantEvent::MemberRemoved {
                    user_id: user(3),
                    removed_by: user(by),
                    revoke_keys: true,
                }]);
        }
        TenantTest::with(())
            .given(given.clone())
            .when(remove(4, 2))
            .then_expect_error(TenantError::Forbidden("Only an owner removes an owner."));
        TenantTest::with(())
            .given(given.clone())
            .when(remove(4, 1))
            .then_expect_events(vec![TenantEvent::MemberRemoved {
                user_id: user(4),
                removed_by: user(1),
                revoke_keys: false,
            }]);
        TenantTest::with(())
            .given(given.clone())
            .when(remove(9, 1))
            .then_expect_error(TenantError::UnknownMember);
        let mut after = given;
        after.push(TenantEvent::MemberRemoved {
            user_id: user(3),
            removed_by: user(1),
            revoke_keys: false,
        });
        let tenant = state_after(after.clone());
        assert_eq!(tenant.roles_of(&user(3)), None);
        TenantTest::with(())
            .given(after)
            .when(remove(3, 1))
            .then_expect_error(TenantError::UnknownMember);
    }

    #[test]
    fn an_owner_hands_ownership_over_and_becomes_an_admin() {
        let given = team(&[(2, &[Viewer, SellerManager])]);
        let transferred = TenantEvent::OwnershipTransferred {
            from: user(1),
            to: user(2),
            from_roles: vec![Admin],
            to_roles: vec![Owner, SellerManager, Viewer],
        };
        TenantTest::with(())
            .given(given.clone())
            .when(TenantCommand::TransferOwnership {
                to: user(2),
                by: user(1),
            })
            .then_expect_events(vec![transferred.clone()]);
        let mut after = given.clone();
        after.push(transferred);
        let tenant = state_after(after);
        assert_eq!(tenant.roles_of(&user(1)), Some(&[Admin][..]));
        assert_eq!(
            tenant.roles_of(&user(2)),
            Some(&[Owner, SellerManager, Viewer][..])
        );
        for (to, by, error) in [
            (
                2,
                2,
                TenantError::Forbidden("Only an owner transfers ownership."),
            ),
            (
                1,
                1,
                TenantError::Forbidden("Nobody changes their own roles."),
            ),
            (9, 1, TenantError::UnknownMember),
        ] {
            TenantTest::with(())
                .given(given.clone())
                .when(TenantCommand::TransferOwnership {
                    to: user(to),
                    by: user(by),
                })
                .then_expect_error(error);
        }
    }

    #[test]
    fn an_open_invitation_closes_at_its_expiry_or_when_used() {
        let mut invitation = Invitation {
            email: email("x"),
            roles: vec![Viewer],
            invited_by: user(1),
            expires_at: at(),
            state: InvitationState::Pending,
        };
        assert!(invitation.is_open(at() - Duration::microseconds(1)));
        assert!(!invitation.is_open(at()));
        invitation.state = InvitationState::Revoked;
        assert!(!invitation.is_open(at() - Duration::days(1)));
    }
}
