// update-card: new certificates for the keys a personalised smart card holds (DESIGN.md task 2),
// as a pure state machine run by the station's workflow actor (events and commands journaled
// before the commands run).
//
// Per key action (ActionsChosen "key.<i>.action"):
//   blank  nothing;
//   issue  a certificate for the key that is not stored on the card;
//   redo   remove the key's current certificate and store the new one: how a transport
//          certificate (TC) is replaced; required for the key holding the TC;
//   add    another certificate on the same key; REFUSED when the card holds a TC (it would keep
//          the TC on the card), with a reason naming the key to redo.
// A TC card needs a procedure with TC controls (trusted TC issuers): the TC's issuer is checked
// against them when the actions are chosen, and its authenticity (ValidateTransportCertificate)
// before the officer signs: an untrusted or forged TC ends in Failed before any write command.
//
// Events and fields (lists indexed as in workflow_support.hpp):
//   CardInserted        workflow_id, token_serial, reader
//   CardContentsRead    token_serial, key.<i>.id, key.<i>.cert_serial, tc.present (yes|no),
//                       tc.key (index of the key holding the TC), tc.serial, tc.subject,
//                       tc.issuer, pin_count (1|2)
//   ProcedureChosen     procedure, tc_trusted_issuer.<n>, replace_ca (yes|no),
//                       operator_pin (none|required)
//   ActionsChosen       key.<i>.action (blank|issue|redo|add), subject.<name>
//   TcValidated, TcRejected{reason}
//   OfficerPinEntered{pin_ref}, OfficerSigned{signer_ref}, OfficerPinRejected{tries_left}
//   CertificatesIssued  cert.<k>.serial, cert.<k>.ref, cert.<k>.entry, ca_cert.<m>.ref,
//                       operator_pin_ref (when the CM database holds the operator PIN)
//   CardPinEntered      pin_index, pin_ref (the card's PIN, by reference; two where it has two)
//   CardPinRejected{tries_left}, OperatorPinEntered{pin_ref}, CardWritten,
//   CaCertificatesReplaced, CardRemoved, CardFull, CmRefused{reason}, CmUnreachable{reason},
//   RetryRequested, CancelRequested{reason}, RollbackConfirmed
//
// Commands: ReadCardContents, AskOperator{ask=procedure|key_actions|signature_pin|card_pin|
// operator_pin|reinsert_card|retry}, ValidateTransportCertificate, SignWithOfficer,
// SubmitToCm{transaction_id derived from workflow_id, request.<n>.kind/entry/key_id/replaces},
// WriteKeysAndCertificates{object.<n> to write, remove.<n> to delete (the redone certificates
// and the TC), card_pin.<i>.ref, operator_pin_ref}, ReplaceCaCertificates, RefuseCard,
// RollbackCard, RevokeIssuedCertificates, NotifyOperator.
//
// Per-state invariants:
//   ContentsConfirmed      key.<i>.*; tc.present; with a TC, key.<tc.key>.cert_serial = tc.serial
//   ProcedureConfirmed     procedure; with a TC, at least one tc_trusted_issuer
//   TcValidationRequested  tc.issuer is among tc_trusted_issuer; no add action; the TC key is redo
//   SignaturePinAwaited    (TC card) tc.validated = yes; nothing written (no object.<n>)
//   CardPinAwaited         issued.<n>; write.<n> / remove.<n> computed; card_pin.current
//   WriteRequested         object.<n> lists every object the write may create
//   SuspendedAwaitingCard / SuspendedAwaitingRetry  resume_state, suspend_reason
//   RollbackRequested      outcome, reason, object.<n> non-empty
//   Failed / Cancelled     reason
//
// The diagram (render_mermaid; tests/golden/machines/update-card.mmd is the committed copy;
// the test compares both with the table):
// clang-format off
// BEGIN MERMAID
// stateDiagram-v2
//     [*] --> Idle
//     Idle --> ContentsReadRequested : CardInserted [ReadCardContents]
//     ContentsReadRequested --> ContentsConfirmed : CardContentsRead [keys, certificates, TC]
//     ContentsConfirmed --> ProcedureConfirmed : ProcedureChosen
//     ContentsConfirmed --> ContentsConfirmed : ProcedureChosen [refused- TC card, no TC controls]
//     ProcedureConfirmed --> TcValidationRequested : ActionsChosen [TC issuer trusted / ValidateTransportCertificate]
//     ProcedureConfirmed --> SignaturePinAwaited : ActionsChosen [no TC]
//     ProcedureConfirmed --> Failed : ActionsChosen [TC issuer not trusted, nothing written]
//     ProcedureConfirmed --> ProcedureConfirmed : ActionsChosen [refused- add on TC card, redo without cert, ...]
//     TcValidationRequested --> SignaturePinAwaited : TcValidated
//     TcValidationRequested --> Failed : TcRejected [nothing written]
//     SignaturePinAwaited --> SignatureRequested : OfficerPinEntered [SignWithOfficer]
//     SignatureRequested --> SubmittedToCm : OfficerSigned [SubmitToCm]
//     SignatureRequested --> SignaturePinAwaited : OfficerPinRejected [tries left]
//     SignatureRequested --> Failed : OfficerPinRejected [blocked]
//     SubmittedToCm --> CardPinAwaited : CertificatesIssued [something to write]
//     SubmittedToCm --> Done : CertificatesIssued [issue only- not stored on card]
//     SubmittedToCm --> Failed : CmRefused
//     SubmittedToCm --> SuspendedAwaitingRetry : CmUnreachable
//     CardPinAwaited --> CardPinAwaited : CardPinEntered [second PIN]
//     CardPinAwaited --> OperatorPinAwaited : CardPinEntered [operator PIN required, not in CM]
//     CardPinAwaited --> WriteRequested : CardPinEntered [WriteKeysAndCertificates]
//     CardPinAwaited --> CaCertsReplaceRequested : CardPinEntered [only CA certificates to write]
//     OperatorPinAwaited --> WriteRequested : OperatorPinEntered
//     OperatorPinAwaited --> CaCertsReplaceRequested : OperatorPinEntered [only CA certificates to write]
//     WriteRequested --> CardPinAwaited : CardPinRejected [tries left]
//     WriteRequested --> RollbackRequested : CardPinRejected [blocked]
//     WriteRequested --> CaCertsReplaceRequested : CardWritten [replace CA certificates]
//     WriteRequested --> Done : CardWritten
//     WriteRequested --> RollbackRequested : CardFull
//     CaCertsReplaceRequested --> Done : CaCertificatesReplaced
//     SuspendedAwaitingRetry --> SubmittedToCm : RetryRequested [same transactionID]
//     RollbackRequested --> Cancelled : RollbackConfirmed
//     RollbackRequested --> Failed : RollbackConfirmed
//     Done --> Done : CardRemoved [terminal absorbs]
//     Cancelled --> Cancelled : CardRemoved [terminal absorbs]
//     Failed --> Failed : CardRemoved [terminal absorbs]
//     ContentsReadRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     ContentsConfirmed --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     ProcedureConfirmed --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     TcValidationRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     SignaturePinAwaited --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     SignatureRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     SubmittedToCm --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     CardPinAwaited --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     OperatorPinAwaited --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     WriteRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     CaCertsReplaceRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     RollbackRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     SuspendedAwaitingRetry --> SuspendedAwaitingCard : CardRemoved [resume_state kept]
//     SuspendedAwaitingCard --> ContentsReadRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> ContentsConfirmed : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> ProcedureConfirmed : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> TcValidationRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> SignaturePinAwaited : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> SignatureRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> SubmittedToCm : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> CardPinAwaited : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> OperatorPinAwaited : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> WriteRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> CaCertsReplaceRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> RollbackRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> SuspendedAwaitingCard : CardInserted [other card, RefuseCard]
//     SuspendedAwaitingCard --> Cancelled : CancelRequested [nothing on card]
//     ContentsReadRequested --> Cancelled : CancelRequested
//     ContentsConfirmed --> Cancelled : CancelRequested
//     ProcedureConfirmed --> Cancelled : CancelRequested
//     TcValidationRequested --> Cancelled : CancelRequested
//     SignaturePinAwaited --> Cancelled : CancelRequested
//     SignatureRequested --> Cancelled : CancelRequested
//     SubmittedToCm --> Cancelled : CancelRequested
//     CardPinAwaited --> Cancelled : CancelRequested
//     OperatorPinAwaited --> Cancelled : CancelRequested
//     SuspendedAwaitingRetry --> Cancelled : CancelRequested
//     WriteRequested --> RollbackRequested : CancelRequested [RollbackCard]
//     CaCertsReplaceRequested --> RollbackRequested : CancelRequested [RollbackCard]
//     SuspendedAwaitingCard --> SuspendedAwaitingCard : CancelRequested [rollback once the card is back]
//     RollbackRequested --> RollbackRequested : CancelRequested [already rolling back]
//     Done --> [*]
//     Cancelled --> [*]
//     Failed --> [*]
// END MERMAID
// clang-format on
#pragma once

#include "persoflow/machines/machine.hpp"

namespace persoflow::machines {

// The machine's definition (also registered as "update-card"). Static lifetime.
const MachineDef& update_card_machine();

}  // namespace persoflow::machines
