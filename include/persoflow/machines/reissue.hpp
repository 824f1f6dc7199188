// reissue: a new certificate with a new key pair for a previous certificate (DESIGN.md task 4),
// as a pure state machine run by a workflow actor (events and commands journaled before the
// commands run).
//
// Path: the previous certificate found (serial:<hex> or id:<decimal>) -> the key method:
//   csr   a CSR (pasted or from a file; the actor stores it and passes csr_ref). The actor
//         parses it and verifies its signature (CsrParsed / CsrUnparseable); the machine checks
//         the procedure's policy: signature valid, key type and size in allowed_key, subject
//         equal to the previous certificate's (subject_rule=previous) or the procedure's. An
//         invalid CSR goes to CsrRejected with every problem named; another CSR or the card
//         method can be chosen there.
//   card  a key pair generated on the card (algorithm from allowed_key; CKA_ID derived from the
//         workflow id), then a CSR built and signed on the card.
// -> officer signs -> SubmitToCm: kur where the old key can sign (old_key_usable), otherwise
// p10cr for a CSR and cr for a card key -> where the procedure verifies the e-mail address the
// CM host answers 'waiting' (CmWaiting): AwaitingEmailVerification, a journaled state that
// survives restarts, issuing PollCm (the actor waits check_after seconds first) until
// CertificateIssued, VerificationExpired, or max_polls polls -> the certificate installed on
// the card when the key is there -> the previous certificate revoked (reason superseded) when
// revoke_previous=yes -> Done.
//
// Events and fields:
//   ReissueStarted      workflow_id, procedure, search (serial:<hex>|id:<decimal>),
//                       allowed_key.<a> (e.g. RSA:3072, EC:secp256r1), subject_rule
//                       (previous|procedure), procedure_subject, email_verification (yes|no),
//                       max_polls (default 48), revoke_previous (yes|no)
//   PreviousCertificateFound  serial, subject, old_key_usable (yes|no), old_key_id,
//                       token_serial (the card holding the old key, if any)
//   PreviousCertificateNotFound
//   KeyMethodChosen     method (csr|card); csr: csr_ref; card: algorithm, token_serial
//   CsrParsed           key_algorithm (e.g. RSA:1024), subject, signature (valid|invalid)
//   CsrUnparseable{reason}, KeyGenerated{key_id}, CsrBuiltOnCard{csr_ref}
//   OfficerPinEntered{pin_ref}, OfficerSigned{signer_ref}, OfficerPinRejected{tries_left}
//   CertificateIssued{serial, ref}, CmWaiting{check_after}, VerificationExpired,
//   CertificateInstalled, PreviousRevoked, CmRefused{reason}, CmUnreachable, RetryRequested,
//   CardRemoved, CardInserted{token_serial}, CardFull, AlgorithmUnsupported, CancelRequested,
//   RollbackConfirmed
//
// Commands: FindCertificate, AskOperator{ask=key_method|signature_pin|reinsert_card|retry},
// ValidateCsr, GenerateKeyOnCard, BuildCsrOnCard, SignWithOfficer, SubmitToCm{message
// kur|cr|p10cr, transaction_id derived from workflow_id}, PollCm{transaction_id, poll,
// check_after}, WriteCertificateToCard, RevokeCertificate{serial, reason=superseded},
// RefuseCard, RollbackCard, RevokeIssuedCertificates, NotifyOperator.
//
// Per-state invariants:
//   PreviousConfirmed      previous.serial, previous.subject, previous.key_usable
//   CsrValidationRequested method = csr, csr_ref
//   CsrRejected            csr_problem (every problem found, "; "-separated)
//   CardKeyRequested       method = card, token_serial, key_id, algorithm allowed;
//                          object.0 = key:<key_id>
//   SignaturePinAwaited    csr_ref (validated CSR, or built on the card)
//   AwaitingEmailVerification  polls (1..max_polls), check_after
//   InstallRequested       cert.serial, cert.ref; method = card
//   RevocationRequested    revoke_previous = yes; cert.serial issued
//   Failed                 reason (after issuance, says the new certificate is kept)
//
// The diagram (render_mermaid; tests/golden/machines/reissue.mmd is the committed copy; the
// test compares both with the table):
// clang-format off
// BEGIN MERMAID
// stateDiagram-v2
//     [*] --> Idle
//     Idle --> PreviousSearchRequested : ReissueStarted [FindCertificate]
//     PreviousSearchRequested --> PreviousConfirmed : PreviousCertificateFound
//     PreviousSearchRequested --> Failed : PreviousCertificateNotFound
//     PreviousSearchRequested --> SuspendedAwaitingRetry : CmUnreachable
//     PreviousConfirmed --> CsrValidationRequested : KeyMethodChosen [CSR / ValidateCsr]
//     PreviousConfirmed --> CardKeyRequested : KeyMethodChosen [key on card / GenerateKeyOnCard]
//     PreviousConfirmed --> PreviousConfirmed : KeyMethodChosen [refused- algorithm not allowed]
//     CsrValidationRequested --> SignaturePinAwaited : CsrParsed [signature, key, subject good]
//     CsrValidationRequested --> CsrRejected : CsrParsed [names what is wrong]
//     CsrValidationRequested --> CsrRejected : CsrUnparseable
//     CsrRejected --> CsrValidationRequested : KeyMethodChosen [another CSR]
//     CsrRejected --> CardKeyRequested : KeyMethodChosen
//     CsrRejected --> CsrRejected : KeyMethodChosen [refused- algorithm not allowed]
//     CardKeyRequested --> CsrBuildRequested : KeyGenerated [BuildCsrOnCard]
//     CardKeyRequested --> RollbackRequested : AlgorithmUnsupported
//     CardKeyRequested --> RollbackRequested : CardFull
//     CsrBuildRequested --> SignaturePinAwaited : CsrBuiltOnCard
//     SignaturePinAwaited --> SignatureRequested : OfficerPinEntered [SignWithOfficer]
//     SignatureRequested --> SubmittedToCm : OfficerSigned [SubmitToCm kur / cr / p10cr]
//     SignatureRequested --> SignaturePinAwaited : OfficerPinRejected [tries left]
//     SignatureRequested --> RollbackRequested : OfficerPinRejected [blocked, key on card]
//     SignatureRequested --> Failed : OfficerPinRejected [blocked, CSR]
//     SubmittedToCm --> InstallRequested : CertificateIssued [key on card / WriteCertificateToCard]
//     SubmittedToCm --> RevocationRequested : CertificateIssued [revoke previous]
//     SubmittedToCm --> Done : CertificateIssued
//     SubmittedToCm --> AwaitingEmailVerification : CmWaiting [e-mail verification / PollCm]
//     SubmittedToCm --> RollbackRequested : CmRefused [key on card]
//     SubmittedToCm --> Failed : CmRefused [CSR]
//     SubmittedToCm --> SuspendedAwaitingRetry : CmUnreachable
//     AwaitingEmailVerification --> AwaitingEmailVerification : CmWaiting [PollCm again]
//     AwaitingEmailVerification --> RollbackRequested : CmWaiting [polls exhausted, key on card]
//     AwaitingEmailVerification --> Failed : CmWaiting [polls exhausted]
//     AwaitingEmailVerification --> InstallRequested : CertificateIssued
//     AwaitingEmailVerification --> RevocationRequested : CertificateIssued
//     AwaitingEmailVerification --> Done : CertificateIssued
//     AwaitingEmailVerification --> RollbackRequested : VerificationExpired [key on card]
//     AwaitingEmailVerification --> Failed : VerificationExpired
//     AwaitingEmailVerification --> RollbackRequested : CmRefused [key on card]
//     AwaitingEmailVerification --> Failed : CmRefused [CSR]
//     AwaitingEmailVerification --> SuspendedAwaitingRetry : CmUnreachable
//     InstallRequested --> RevocationRequested : CertificateInstalled
//     InstallRequested --> Done : CertificateInstalled
//     InstallRequested --> RollbackRequested : CardFull
//     RevocationRequested --> Done : PreviousRevoked [reason superseded]
//     RevocationRequested --> Failed : CmRefused [new certificate kept]
//     RevocationRequested --> SuspendedAwaitingRetry : CmUnreachable
//     SuspendedAwaitingRetry --> PreviousSearchRequested : RetryRequested
//     SuspendedAwaitingRetry --> SubmittedToCm : RetryRequested [same transactionID]
//     SuspendedAwaitingRetry --> AwaitingEmailVerification : RetryRequested [poll again]
//     SuspendedAwaitingRetry --> RevocationRequested : RetryRequested [same transactionID]
//     RollbackRequested --> Cancelled : RollbackConfirmed
//     RollbackRequested --> Failed : RollbackConfirmed
//     RollbackRequested --> RollbackRequested : CancelRequested [already rolling back]
//     PreviousConfirmed --> PreviousConfirmed : OperatorNotified [notice shown]
//     CsrRejected --> CsrRejected : OperatorNotified [notice shown]
//     CsrValidationRequested --> CsrValidationRequested : OperatorNotified [notice shown]
//     CardKeyRequested --> CardKeyRequested : OperatorNotified [notice shown]
//     Failed --> Failed : OperatorNotified [notice shown]
//     Cancelled --> Cancelled : OperatorNotified [notice shown]
//     RollbackRequested --> RollbackRequested : IssuedCertificatesRevoked [revoked]
//     Cancelled --> Cancelled : IssuedCertificatesRevoked [revoked]
//     Done --> Done : CardRemoved [terminal absorbs]
//     Failed --> Failed : CardRemoved [terminal absorbs]
//     Cancelled --> Cancelled : CardRemoved [terminal absorbs]
//     CardKeyRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     CsrBuildRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     InstallRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     RollbackRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     SuspendedAwaitingCard --> CardKeyRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> CsrBuildRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> InstallRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> RollbackRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> SuspendedAwaitingCard : CardInserted [other card, RefuseCard]
//     PreviousSearchRequested --> Cancelled : CancelRequested
//     PreviousConfirmed --> Cancelled : CancelRequested
//     CsrValidationRequested --> Cancelled : CancelRequested
//     CsrRejected --> Cancelled : CancelRequested
//     SignaturePinAwaited --> Cancelled : CancelRequested [CSR]
//     SignaturePinAwaited --> RollbackRequested : CancelRequested [key on card]
//     SignatureRequested --> Cancelled : CancelRequested [CSR]
//     SignatureRequested --> RollbackRequested : CancelRequested [key on card]
//     SubmittedToCm --> Cancelled : CancelRequested [CSR]
//     SubmittedToCm --> RollbackRequested : CancelRequested [key on card]
//     AwaitingEmailVerification --> Cancelled : CancelRequested [CSR]
//     AwaitingEmailVerification --> RollbackRequested : CancelRequested [key on card]
//     SuspendedAwaitingRetry --> Cancelled : CancelRequested [CSR]
//     SuspendedAwaitingRetry --> RollbackRequested : CancelRequested [key on card]
//     CardKeyRequested --> RollbackRequested : CancelRequested [RollbackCard]
//     CsrBuildRequested --> RollbackRequested : CancelRequested [RollbackCard]
//     InstallRequested --> RollbackRequested : CancelRequested [RollbackCard]
//     SuspendedAwaitingCard --> SuspendedAwaitingCard : CancelRequested [rollback once the card is back]
//     Done --> [*]
//     Cancelled --> [*]
//     Failed --> [*]
// END MERMAID
// clang-format on
#pragma once

#include "persoflow/machines/machine.hpp"

namespace persoflow::machines {

// The machine's definition (also registered as "reissue"). Static lifetime.
const MachineDef& reissue_machine();

}  // namespace persoflow::machines
