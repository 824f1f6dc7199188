// issue-soft-token: a PKCS#12 software token (DESIGN.md task 3), as a pure state machine run by a
// workflow actor (events and commands journaled before the commands run).
//
// Key rule: for each certificate procedure whose key usage (a canonical set: order and spaces
// do not matter) is not covered by a key procedure for archiving, the RA generates the key
// itself, with the algorithm chosen from the key-generation list (its `*` entry the default);
// the other keys come from the CM host: each key procedure sends its request, archive
// (RequestServerKeygenAndArchive) or recovery (RequestKeyRecovery: for a soft token a recovery
// request is always sent where the procedure has one). Before the RA generates keys, key
// generation is initialised (InitializeKeyGeneration: the RNG reseeded with entropy from the
// officer's card and the OS). A PKCS#12 for an officer (ProcedureChosen officer=yes) needs
// certificate procedures without key usage: otherwise refused.
//
// Events and fields (lists indexed as in workflow_support.hpp):
//   ProcedureChosen     workflow_id, procedure, pin_delivery (entered|generated|mailer|letter),
//                       cert_proc.<c>.name, cert_proc.<c>.key_usage (comma list, may be empty),
//                       key_proc.<k>.kind (archive|recover), key_proc.<k>.key_usage,
//                       key_proc.<k>.scope (last|all), ra_key_generation (the list, default
//                       kDefaultKeyGenerationList), officer (yes|no)
//   RequestEntered      subject.<name>, algorithm (e.g. EC:secp256r1; default the `*` entry),
//                       p12_file, cert_file (.der by default, PEM when it ends in .pem),
//                       key_proc.<k>.search (auto|serial:<hex>|subject:<text>|id:<decimal>)
//   KeyGenerationInitialized{seed_ref}, SeedInterrupted
//   LocalKeyGenerated{cert_proc, key_ref}, ServerKeyArchived{key_proc, key_ref},
//   KeyRecovered{key_proc, recovered.<j>.key_ref, recovered.<j>.cert_serial}
//   OfficerPinEntered{pin_ref}, OfficerSigned{signer_ref}, OfficerPinRejected{tries_left}
//   CertificatesIssued  cert.<k>.serial, cert.<k>.ref, chain.<m>.ref
//   PinEntered / PinEntryCancelled / PinGenerated / PinMailerAddressEntered /
//   PinLetterIdEntered / PinLetterResolved (the PIN sub-flow of workflow_support.hpp)
//   Pkcs12Written, CertificateFileWritten, FileWriteFailed{path, reason}, PinDelivered,
//   AlgorithmUnsupported{algorithm, reason}, CmRefused, CmUnreachable, RetryRequested,
//   CancelRequested, RollbackConfirmed
//
// Commands: AskOperator, InitializeKeyGeneration, GenerateKeyLocally{key_id derived from
// workflow_id}, RequestServerKeygenAndArchive, RequestKeyRecovery, SignWithOfficer,
// SubmitToCm{transaction_id derived from workflow_id}, GeneratePin, ResolvePinLetter,
// WritePkcs12{path, pin_ref, cert.*, chain.*, key refs}, WriteCertificateFile{path, format},
// ShowPinOnce, QueuePinLetter, RemoveFiles{object.<n> = file:<path>}, RevokeIssuedCertificates,
// NotifyOperator.
//
// Per-state invariants:
//   ProcedureConfirmed     cert_proc.<c>.key = local|server; local_keys; algorithm_choice.<a>
//   SeedRequested          local_keys > 0; algorithm is one of algorithm_choice; seed.attempt
//   KeysRequested          <list>.<i>.status = requested for each key command in flight
//   SignaturePinAwaited    no status is requested
//   Pin*                   issued.<n>; nothing written (no object.<n>)
//   Pkcs12WriteRequested   pin.0.ref; object.<n> = file:<p12_file>, file:<cert_file>
//   RollbackRequested      object.<n> (files to remove), outcome, reason
//
// The diagram (render_mermaid; tests/golden/machines/issue-soft-token.mmd is the committed
// copy; the test compares both with the table):
// clang-format off
// BEGIN MERMAID
// stateDiagram-v2
//     [*] --> Idle
//     Idle --> ProcedureConfirmed : ProcedureChosen [local key where no archiving key procedure covers the key usage]
//     Idle --> Idle : ProcedureChosen [refused- officer P12 with key usage]
//     ProcedureConfirmed --> SeedRequested : RequestEntered [local keys / InitializeKeyGeneration]
//     ProcedureConfirmed --> KeysRequested : RequestEntered [all keys from the CM host]
//     ProcedureConfirmed --> ProcedureConfirmed : RequestEntered [refused- algorithm not in list, ...]
//     SeedRequested --> KeysRequested : KeyGenerationInitialized [GenerateKeyLocally / RequestServerKeygenAndArchive / RequestKeyRecovery]
//     SeedRequested --> SeedRequested : SeedInterrupted [re-initialise]
//     KeysRequested --> KeysRequested : LocalKeyGenerated [others pending]
//     KeysRequested --> SignaturePinAwaited : LocalKeyGenerated [all keys there]
//     KeysRequested --> KeysRequested : ServerKeyArchived [others pending]
//     KeysRequested --> SignaturePinAwaited : ServerKeyArchived [all keys there]
//     KeysRequested --> KeysRequested : KeyRecovered [others pending]
//     KeysRequested --> SignaturePinAwaited : KeyRecovered [all keys there]
//     KeysRequested --> Failed : AlgorithmUnsupported
//     KeysRequested --> Failed : CmRefused
//     KeysRequested --> SuspendedAwaitingRetry : CmUnreachable
//     SignaturePinAwaited --> SignatureRequested : OfficerPinEntered [SignWithOfficer]
//     SignatureRequested --> SubmittedToCm : OfficerSigned [SubmitToCm]
//     SignatureRequested --> SignaturePinAwaited : OfficerPinRejected [tries left]
//     SignatureRequested --> Failed : OfficerPinRejected [blocked]
//     SubmittedToCm --> PinEntryAwaited : CertificatesIssued [PIN entered at RA]
//     SubmittedToCm --> PinGenerationRequested : CertificatesIssued [PIN generated]
//     SubmittedToCm --> PinMailerAddressAwaited : CertificatesIssued [PIN mailer]
//     SubmittedToCm --> PinLetterIdAwaited : CertificatesIssued [PIN letter]
//     SubmittedToCm --> Failed : CmRefused
//     SubmittedToCm --> SuspendedAwaitingRetry : CmUnreachable
//     PinEntryAwaited --> Pkcs12WriteRequested : PinEntered [WritePkcs12 / WriteCertificateFile]
//     PinEntryAwaited --> PinGenerationRequested : PinEntryCancelled [generated PIN shown instead]
//     PinGenerationRequested --> Pkcs12WriteRequested : PinGenerated
//     PinMailerAddressAwaited --> PinGenerationRequested : PinMailerAddressEntered
//     PinLetterIdAwaited --> PinLetterResolutionRequested : PinLetterIdEntered
//     PinLetterResolutionRequested --> Pkcs12WriteRequested : PinLetterResolved
//     Pkcs12WriteRequested --> Pkcs12WriteRequested : Pkcs12Written [certificate file pending]
//     Pkcs12WriteRequested --> PinDeliveryRequested : Pkcs12Written [ShowPinOnce / QueuePinLetter]
//     Pkcs12WriteRequested --> Done : Pkcs12Written
//     Pkcs12WriteRequested --> Pkcs12WriteRequested : CertificateFileWritten [PKCS#12 pending]
//     Pkcs12WriteRequested --> PinDeliveryRequested : CertificateFileWritten [ShowPinOnce / QueuePinLetter]
//     Pkcs12WriteRequested --> Done : CertificateFileWritten
//     Pkcs12WriteRequested --> RollbackRequested : FileWriteFailed [RemoveFiles]
//     PinDeliveryRequested --> Done : PinDelivered
//     SuspendedAwaitingRetry --> KeysRequested : RetryRequested [same transactionID]
//     SuspendedAwaitingRetry --> SubmittedToCm : RetryRequested [same transactionID]
//     RollbackRequested --> Cancelled : RollbackConfirmed
//     RollbackRequested --> Failed : RollbackConfirmed
//     RollbackRequested --> RollbackRequested : CancelRequested [already rolling back]
//     ProcedureConfirmed --> Cancelled : CancelRequested
//     SeedRequested --> Cancelled : CancelRequested
//     KeysRequested --> Cancelled : CancelRequested
//     SignaturePinAwaited --> Cancelled : CancelRequested
//     SignatureRequested --> Cancelled : CancelRequested
//     SubmittedToCm --> Cancelled : CancelRequested
//     PinEntryAwaited --> Cancelled : CancelRequested
//     PinGenerationRequested --> Cancelled : CancelRequested
//     PinMailerAddressAwaited --> Cancelled : CancelRequested
//     PinLetterIdAwaited --> Cancelled : CancelRequested
//     PinLetterResolutionRequested --> Cancelled : CancelRequested
//     SuspendedAwaitingRetry --> Cancelled : CancelRequested
//     Pkcs12WriteRequested --> RollbackRequested : CancelRequested [RemoveFiles]
//     PinDeliveryRequested --> RollbackRequested : CancelRequested [RemoveFiles]
//     Done --> [*]
//     Cancelled --> [*]
//     Failed --> [*]
// END MERMAID
// clang-format on
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "persoflow/machines/machine.hpp"

namespace persoflow::machines {

// The machine's definition (also registered as "issue-soft-token"). Static lifetime.
const MachineDef& issue_soft_token_machine();

// The RA's key-generation list, in the syntax of `client.ra-key-generation`.
inline constexpr std::string_view kDefaultKeyGenerationList =
    "RSA:2048*, RSA:3072, RSA:4096, RSA:8192, EC:brainpoolP256r1, EC:brainpoolP320r1, "
    "EC:brainpoolP384r1, EC:brainpoolP512r1, EC:secp256r1, EC:secp384r1, EC:secp521r1, "
    "DSA:1024";

struct KeyGenerationList {
  std::vector<std::string> entries;  // "RSA:2048", "EC:secp256r1", ... in list order
  std::string default_entry;         // the `*` entry, or the first when none is marked
};
// Parses the list; an entry that is not ALG:PARAM (ALG one of RSA, EC, DSA), a duplicate or two
// defaults is kInvalidArgument naming it.
Result<KeyGenerationList> parse_key_generation_list(std::string_view text);

}  // namespace persoflow::machines
