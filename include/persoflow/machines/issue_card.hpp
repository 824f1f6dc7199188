// issue-card: issuing certificates on a pre-personalised smart card (DESIGN.md task 1), as a
// pure state machine. The station's workflow actor runs it: every event and the commands it
// produces are journaled before the commands run; commands come back as events.
//
// Events (what the outside decided or observed) and their fields; lists follow the indexed
// convention of workflow_support.hpp ("key.<i>.<attr>"):
//   CardInserted        workflow_id, token_serial, reader (first event; again on reinsertion)
//   CardContentsRead    token_serial, key.<i>.id (CKA_ID hex; empty = free entry),
//                       key.<i>.cert_serial, key.<i>.label, tc.present (yes|no), tc.subject,
//                       tc.issuer, tc.serial, pin_count (1|2)
//   ProcedureChosen     procedure, pin_delivery (entered|generated|mailer|letter),
//                       key_archiving (yes|no), key_algorithm (e.g. EC:secp256r1),
//                       recovery.<r>.scope (last|all), recovery.<r>.reuse_certificate (yes|no),
//                       replace_ca (yes|no), operator_pin (none|required)
//   ActionsChosen       key.<i>.action (blank|add|recover), key.<i>.algorithm,
//                       key.<i>.search (auto|serial:<hex>|subject:<text>|id:<decimal>),
//                       key.<i>.request (default|yes|no), key.<i>.recovery (index r),
//                       subject.<name> (the certificate's subject fields)
//   KeyGenerated        entry, key_id          ServerKeyArchived  entry, key_ref
//   KeyRecovered        entry, recovered.<j>.key_ref, recovered.<j>.cert_serial (reused cert)
//   OfficerPinEntered   pin_ref                OfficerSigned      signer_ref
//   OfficerPinRejected  tries_left             OperatorPinEntered pin_ref
//   CertificatesIssued  cert.<k>.serial, cert.<k>.ref, cert.<k>.entry, ca_cert.<m>.ref,
//                       operator_pin_ref (when the CM database holds the operator PIN)
//   CardWritten, CaCertificatesReplaced, CardPinSet{pin_index}, PinDelivered{pin_index}
//   PinEntered{pin_index, pin_ref}, PinEntryCancelled, PinGenerated{pin_index, pin_ref},
//   PinMailerAddressEntered{address}, PinLetterIdEntered{letter_id},
//   PinLetterResolved{pin_index, pin_ref, puk_ref (a PIN/PUK letter on a card with two PINs)},
//   PinLetterRefused{pin_index, reason} (the CM host will not bind the letter)
//   CardRemoved{reader}, CardFull{reason}, AlgorithmUnsupported{entry, algorithm},
//   CmRefused{reason}, CmUnreachable{reason}, RetryRequested, CancelRequested{reason},
//   RollbackConfirmed
//
// Commands: ReadCardContents, AskOperator{ask=procedure|key_actions|signature_pin|operator_pin|
// pin|pin_mailer_address|pin_letter_id|reinsert_card|retry}, GenerateKeyOnCard{key_id derived
// from workflow_id and entry}, RequestServerKeygenAndArchive, RequestKeyRecovery,
// SignWithOfficer, SubmitToCm{transaction_id derived from workflow_id and "submit"},
// WriteKeysAndCertificates (the actor re-reads the card first; present objects count as done),
// ReplaceCaCertificates, GeneratePin, ResolvePinLetter{letter_id, pin_count=2 on a card with
// two PINs}, SetCardPin, ShowPinOnce, QueuePinLetter,
// RefuseCard, RollbackCard{object.<n>}, RevokeIssuedCertificates, NotifyOperator.
//
// Rules:
// - A card holding a transport certificate is not issued on: RedirectedToUpdate (update-card
//   with redo replaces the TC after validating it).
// - add on an entry with a key certifies that key; on a free entry the key is generated on the
//   card, or by the CM host and archived when the procedure archives ('generate & archive').
// - recover: the request is sent by default; where the procedure has several recovery
//   procedures, only when a key was selected (search other than auto) or request=yes.
// - A card with two PINs (pin_count 2: a PIN and a PUK) gets both, each as the PIN mode says;
//   the PIN mailer sends them in one letter (QueuePinLetter{pin_ref, puk_ref} after the second);
//   a pre-printed PIN/PUK letter gives both at once (PinLetterResolved{pin_ref, puk_ref}); a
//   letter the CM host refuses (a PIN-only letter for such a card) asks for another.
// - Every object the workflow may have put on the card is listed in "object.<n>" before the
//   command that writes it runs, so a rollback removes exactly those.
//
// Per-state invariants (data present in the state):
//   ContentsReadRequested  workflow_id, token_serial, reader
//   ContentsConfirmed      + key.<i>.* as read, pin.count; no TC on the card
//   ProcedureConfirmed     + procedure, pin.delivery, key.<i>.archive, key.<i>.recoverable
//   KeysRequested          + key.<i>.op (none|certify|generate|archive|recover),
//                          key.<i>.status = requested for each key command in flight;
//                          object.<n> lists every key generated on the card
//   SignaturePinAwaited    every key.<i>.status is confirmed; subject.* non-empty
//   SignatureRequested     officer.pin_ref, officer.attempt
//   SubmittedToCm          officer.signer_ref
//   OperatorPinAwaited / WriteRequested  issued.<n> (serials), write.<n> ⊆ object.<n>
//   CaCertsReplaceRequested, Pin*  written = yes
//   SuspendedAwaitingCard / SuspendedAwaitingRetry  resume_state, suspend_reason
//   RollbackRequested      outcome (cancelled|failed), reason, object.<n> non-empty
//   Failed / Cancelled     reason;  RedirectedToUpdate  reason
//
// The diagram (generated by render_mermaid; tests/golden/machines/issue-card.mmd is the
// committed copy, compared on every test run; the block below is checked by the same test):
// clang-format off
// BEGIN MERMAID
// stateDiagram-v2
//     [*] --> Idle
//     Idle --> ContentsReadRequested : CardInserted [ReadCardContents]
//     ContentsReadRequested --> ContentsConfirmed : CardContentsRead [no TC]
//     ContentsReadRequested --> RedirectedToUpdate : CardContentsRead [TC present- issue is an update]
//     ContentsConfirmed --> ProcedureConfirmed : ProcedureChosen [entries marked generate-archive / recover]
//     ProcedureConfirmed --> KeysRequested : ActionsChosen [GenerateKeyOnCard / RequestServerKeygenAndArchive / RequestKeyRecovery]
//     ProcedureConfirmed --> SignaturePinAwaited : ActionsChosen [only keys the card holds]
//     ProcedureConfirmed --> ProcedureConfirmed : ActionsChosen [refused with reason]
//     KeysRequested --> KeysRequested : KeyGenerated [others pending]
//     KeysRequested --> SignaturePinAwaited : KeyGenerated [all keys there]
//     KeysRequested --> KeysRequested : ServerKeyArchived [others pending]
//     KeysRequested --> SignaturePinAwaited : ServerKeyArchived [all keys there]
//     KeysRequested --> KeysRequested : KeyRecovered [others pending]
//     KeysRequested --> SignaturePinAwaited : KeyRecovered [all keys there]
//     KeysRequested --> RollbackRequested : CardFull
//     KeysRequested --> RollbackRequested : AlgorithmUnsupported
//     KeysRequested --> RollbackRequested : CmRefused [keys on card]
//     KeysRequested --> Failed : CmRefused [nothing on card]
//     KeysRequested --> SuspendedAwaitingRetry : CmUnreachable
//     SignaturePinAwaited --> SignatureRequested : OfficerPinEntered [SignWithOfficer]
//     SignatureRequested --> SubmittedToCm : OfficerSigned [SubmitToCm]
//     SignatureRequested --> SignaturePinAwaited : OfficerPinRejected [tries left]
//     SignatureRequested --> RollbackRequested : OfficerPinRejected [blocked, keys on card]
//     SignatureRequested --> Failed : OfficerPinRejected [blocked, nothing on card]
//     SubmittedToCm --> WriteRequested : CertificatesIssued [WriteKeysAndCertificates]
//     SubmittedToCm --> OperatorPinAwaited : CertificatesIssued [operator PIN required, not in CM]
//     SubmittedToCm --> RollbackRequested : CmRefused [keys on card]
//     SubmittedToCm --> Failed : CmRefused [nothing on card]
//     SubmittedToCm --> SuspendedAwaitingRetry : CmUnreachable
//     OperatorPinAwaited --> WriteRequested : OperatorPinEntered
//     WriteRequested --> CaCertsReplaceRequested : CardWritten [replace CA certificates]
//     WriteRequested --> PinEntryAwaited : CardWritten [PIN entered at RA]
//     WriteRequested --> PinGenerationRequested : CardWritten [PIN generated]
//     WriteRequested --> PinMailerAddressAwaited : CardWritten [PIN mailer]
//     WriteRequested --> PinLetterIdAwaited : CardWritten [PIN letter]
//     WriteRequested --> RollbackRequested : CardFull
//     CaCertsReplaceRequested --> PinEntryAwaited : CaCertificatesReplaced
//     CaCertsReplaceRequested --> PinGenerationRequested : CaCertificatesReplaced
//     CaCertsReplaceRequested --> PinMailerAddressAwaited : CaCertificatesReplaced
//     CaCertsReplaceRequested --> PinLetterIdAwaited : CaCertificatesReplaced
//     PinEntryAwaited --> PinSetRequested : PinEntered [pin_ref only]
//     PinEntryAwaited --> PinGenerationRequested : PinEntryCancelled [generated PIN shown instead]
//     PinGenerationRequested --> PinSetRequested : PinGenerated
//     PinMailerAddressAwaited --> PinGenerationRequested : PinMailerAddressEntered
//     PinLetterIdAwaited --> PinLetterResolutionRequested : PinLetterIdEntered
//     PinLetterResolutionRequested --> PinSetRequested : PinLetterResolved
//     PinLetterResolutionRequested --> PinLetterIdAwaited : PinLetterRefused [another letter asked for]
//     PinSetRequested --> PinDeliveryRequested : CardPinSet [ShowPinOnce / QueuePinLetter]
//     PinSetRequested --> PinEntryAwaited : CardPinSet [second PIN]
//     PinSetRequested --> PinLetterIdAwaited : CardPinSet [second PIN]
//     PinSetRequested --> PinSetRequested : CardPinSet [PUK of the same PIN/PUK letter]
//     PinSetRequested --> PinGenerationRequested : CardPinSet [second PIN, one letter for both]
//     PinSetRequested --> Done : CardPinSet
//     PinDeliveryRequested --> PinEntryAwaited : PinDelivered [second PIN]
//     PinDeliveryRequested --> PinGenerationRequested : PinDelivered [second PIN]
//     PinDeliveryRequested --> Done : PinDelivered
//     SuspendedAwaitingRetry --> KeysRequested : RetryRequested [same transactionID]
//     SuspendedAwaitingRetry --> SubmittedToCm : RetryRequested [same transactionID]
//     RollbackRequested --> Cancelled : RollbackConfirmed
//     RollbackRequested --> Failed : RollbackConfirmed
//     Done --> Done : CardRemoved [terminal absorbs]
//     Cancelled --> Cancelled : CardRemoved [terminal absorbs]
//     Failed --> Failed : CardRemoved [terminal absorbs]
//     RedirectedToUpdate --> RedirectedToUpdate : CardRemoved [terminal absorbs]
//     ContentsReadRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     ContentsConfirmed --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     ProcedureConfirmed --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     KeysRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     SignaturePinAwaited --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     SignatureRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     SubmittedToCm --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     OperatorPinAwaited --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     WriteRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     CaCertsReplaceRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     PinEntryAwaited --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     PinGenerationRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     PinMailerAddressAwaited --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     PinLetterIdAwaited --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     PinLetterResolutionRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     PinSetRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     PinDeliveryRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     RollbackRequested --> SuspendedAwaitingCard : CardRemoved [resume_state recorded]
//     SuspendedAwaitingRetry --> SuspendedAwaitingCard : CardRemoved [resume_state kept]
//     SuspendedAwaitingCard --> ContentsReadRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> ContentsConfirmed : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> ProcedureConfirmed : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> KeysRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> SignaturePinAwaited : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> SignatureRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> SubmittedToCm : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> OperatorPinAwaited : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> WriteRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> CaCertsReplaceRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> PinEntryAwaited : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> PinGenerationRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> PinMailerAddressAwaited : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> PinLetterIdAwaited : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> PinLetterResolutionRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> PinSetRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> PinDeliveryRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> RollbackRequested : CardInserted [same card, resume]
//     SuspendedAwaitingCard --> SuspendedAwaitingCard : CardInserted [other card, RefuseCard]
//     SuspendedAwaitingCard --> Cancelled : CancelRequested [nothing on card]
//     ContentsReadRequested --> Cancelled : CancelRequested
//     ContentsConfirmed --> Cancelled : CancelRequested
//     ProcedureConfirmed --> Cancelled : CancelRequested
//     KeysRequested --> Cancelled : CancelRequested [nothing on card]
//     KeysRequested --> RollbackRequested : CancelRequested [RollbackCard]
//     SignaturePinAwaited --> Cancelled : CancelRequested [nothing on card]
//     SignaturePinAwaited --> RollbackRequested : CancelRequested [RollbackCard]
//     SignatureRequested --> Cancelled : CancelRequested [nothing on card]
//     SignatureRequested --> RollbackRequested : CancelRequested [RollbackCard]
//     SubmittedToCm --> Cancelled : CancelRequested [nothing on card]
//     SubmittedToCm --> RollbackRequested : CancelRequested [RollbackCard]
//     SuspendedAwaitingRetry --> Cancelled : CancelRequested [nothing on card]
//     SuspendedAwaitingRetry --> RollbackRequested : CancelRequested [RollbackCard]
//     OperatorPinAwaited --> RollbackRequested : CancelRequested [RollbackCard]
//     WriteRequested --> RollbackRequested : CancelRequested [RollbackCard]
//     CaCertsReplaceRequested --> RollbackRequested : CancelRequested [RollbackCard]
//     PinEntryAwaited --> RollbackRequested : CancelRequested [RollbackCard]
//     PinGenerationRequested --> RollbackRequested : CancelRequested [RollbackCard]
//     PinMailerAddressAwaited --> RollbackRequested : CancelRequested [RollbackCard]
//     PinLetterIdAwaited --> RollbackRequested : CancelRequested [RollbackCard]
//     PinLetterResolutionRequested --> RollbackRequested : CancelRequested [RollbackCard]
//     PinSetRequested --> RollbackRequested : CancelRequested [RollbackCard]
//     PinDeliveryRequested --> RollbackRequested : CancelRequested [RollbackCard]
//     SuspendedAwaitingCard --> SuspendedAwaitingCard : CancelRequested [rollback once the card is back]
//     RollbackRequested --> RollbackRequested : CancelRequested [already rolling back]
//     Done --> [*]
//     Cancelled --> [*]
//     Failed --> [*]
//     RedirectedToUpdate --> [*]
// END MERMAID
// clang-format on
#pragma once

#include "persoflow/machines/machine.hpp"

namespace persoflow::machines {

// The machine's definition (also registered as "issue-card"). Static lifetime.
const MachineDef& issue_card_machine();

}  // namespace persoflow::machines
