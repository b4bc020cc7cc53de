// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title Consortium: the medswarm consortium ledger.
/// @notice Membership, per-round model commitments, per-epoch contribution reports, median
/// scores and a pull-payment reward pool. Auditor-only data (names, digests, sample counts,
/// individual scores) lives in events; storage keeps only what later calls must check.
///
/// Report encoding (`entries`): concatenated 10-byte records, each a big-endian uint16 member
/// index followed by a big-endian int64 score (fixed point, score * 1e6), subjects strictly
/// ascending. Storing reports as one chained hash per epoch, and taking them back as calldata
/// at finalize, keeps a report's storage cost constant in the number of scores.
///
/// Batch encoding (`commitments` of commitBatch / commitAndReport): concatenated 48-byte
/// records, each a big-endian uint64 round, the bytes32 digest and a big-endian uint64 sample
/// count, in any round order. A batch is logged as one ModelsCommitted event carrying these bytes
/// unchanged (one log instead of one per commitment: the logs were most of a batch's cost),
/// with its smallest and largest round as indexed topics.
///
/// Privacy: each report carries the reporter's cumulative differential-privacy spend for the
/// run so far, `epsilon` in micro-epsilon (epsilon * 1e6) and `delta` in units of 1e-18;
/// epsilon NO_PRIVACY (2**64 - 1) means the member trains without differential privacy. The
/// spend is only logged (PrivacySpent): admins set a consortium maximum (setMaxEpsilon) and
/// the auditor flags reports above it. Refusing such a report would leave a node's outbox
/// stuck behind it, and no later call needs the values.
///
/// X25519 keys: each active member registers its own masking public key (setX25519Key), the
/// PKI of secure aggregation among nodes; one storage slot per member, read through member().
///
/// Round window: a commitment's round must be below roundLimit() = (nextEpoch + 2) *
/// roundsPerEpoch + graceRounds, where nextEpoch is the first epoch not finalized. That is the
/// round that would close the epoch after it: a member can count toward closing the current
/// epoch, never a later one, so a member committing round 10**9 closes nothing in advance.
///
/// Waiting for reports: an epoch is closed once more than half of the active members committed
/// its close round ((epoch + 1) * roundsPerEpoch + graceRounds). finalize also waits until every
/// active member has reported it (or a later epoch), so that a fast member finalizing the epoch
/// to move the window on does not shut a slow member's report out. A member that stopped cannot
/// hold the others for long: once more than half of the active members committed up to the
/// window's end (roundLimit() - 1, roundsPerEpoch rounds past the close round), the epoch
/// finalizes without the missing reports. An admin may finalize a closed epoch without waiting
/// (adminFinalize: after a run, when no report is coming any more).
///
/// Late reports: a report of an epoch already finalized is still taken, in epoch order as any
/// report, but only logged (ScoresReportedLate, and its PrivacySpent): the epoch's scores are
/// final, while the privacy spend is a fact the consortium must see. So a member's report is
/// never refused for being slow.
///
/// Stalled epochs: if most members stop committing, an epoch never closes and the window
/// keeps everyone else from moving on. An admin may close the first unfinalized epoch
/// (closeEpoch) once closeTimeout seconds have passed since that epoch became the first
/// unfinalized one (deployment, or the previous finalize or close: epochOpenedAt). Such an
/// epoch pays no reward (its reward stays in the pool; its reports, from the few members left,
/// are not combined) and is logged as EpochClosedByAdmin.
///
/// Cross-site evaluation: each active member commits the sha256 of its row of the swarm's
/// cross-site evaluation matrix (its own validation split scoring every member's final model
/// and the consensus). Only the latest digest is stored, so that sending the same one twice (an
/// outbox retrying after a lost receipt) is refused and lands once.
contract Consortium {
    /// Finalize holds every report in memory and a report about all peers is ~10 bytes each:
    /// 100 members keeps a full finalize under the 128 KiB transaction-size limit of clients.
    uint256 public constant MAX_MEMBERS_LIMIT = 100;
    uint256 internal constant ENTRY_BYTES = 10;
    uint256 internal constant COMMITMENT_BYTES = 48;
    /// A report's epsilon meaning "no differential privacy": no guarantee at all.
    uint64 public constant NO_PRIVACY = type(uint64).max;

    struct Member {
        bool known; // registered at some time: `index` is valid
        bool active;
        uint16 index;
        uint64 nextRound; // 1 + highest round committed (0: none)
        uint64 nextEpoch; // 1 + last epoch reported (0: none); reports go in epoch order
        uint96 owed; // accrued and not yet withdrawn, in wei
    }

    struct MemberView {
        bool known;
        bool active;
        uint16 index;
        uint64 nextRound;
        uint64 nextEpoch;
        uint256 owed;
        uint256 paid;
        string peerId;
        bytes32 x25519Key; // zero: none registered
    }

    struct State {
        uint16 memberCount;
        uint16 maxMembers;
        uint16 adminCount;
        bool locked; // reentrancy guard
        uint64 nextEpoch; // first epoch not finalized; epochs finalize in order
        uint128 rewardPerEpoch;
    }

    struct Report {
        address reporter;
        bytes entries;
    }

    struct EpochResult {
        bytes32 resultsHash; // chained hash of (member, score, reports, share) in index order
        uint128 reward; // what the epoch could hand out
        uint128 allocated; // what it did hand out (<= reward; the rest stays in the pool)
    }

    uint64 public immutable roundsPerEpoch;
    uint64 public immutable graceRounds;
    uint16 public immutable minReports;
    uint64 public immutable deployedAt; // block number: where an auditor starts reading logs
    uint64 public immutable closeTimeout; // seconds before an admin may close a stalled epoch

    State internal _state;
    uint256 public totalOwed;
    mapping(address => bool) public isAdmin;
    mapping(address => Member) internal _members;
    mapping(address => uint256) public paidTo;
    mapping(uint256 => address) public memberAt;
    mapping(address => string) internal _peerIdOf;
    mapping(bytes32 => address) internal _byPeerId;
    mapping(address => mapping(uint256 => uint256)) internal _committed; // round >> 8 -> bits
    mapping(uint64 => bytes32) public reportsHash;
    mapping(uint64 => EpochResult) public epochResult;
    mapping(address => bytes32) internal _x25519Key;
    uint64 internal _maxEpsilon; // micro-epsilon, 0: no maximum; own slot: reports never read it
    mapping(address => bytes32) public evaluationOf; // latest cross-site evaluation digest
    uint64 public epochOpenedAt; // timestamp: when the first unfinalized epoch became so

    error NotAdmin(address caller);
    error LastAdmin(address admin);
    error InvalidConfig(string field, uint256 value);
    error NotMember(address account);
    error MemberInactive(address member);
    error AlreadyMember(address member);
    error BadPeerId(string peerId);
    error PeerIdTaken(string peerId, address holder);
    error MemberCapReached(uint16 maxMembers);
    error AlreadyCommitted(address member, uint64 round);
    error RoundBeyondWindow(uint64 round, uint256 limit);
    error EmptyBatch();
    error BadCommitmentEncoding(uint256 length);
    error AlreadyReported(address member, uint64 epoch);
    error ReportOutOfOrder(address member, uint64 epoch, uint64 lastReported);
    error BadReportEncoding(uint256 length);
    error UnknownSubject(uint16 subject, uint16 memberCount);
    error SelfScore(address member, uint64 epoch);
    error SubjectsNotAscending(uint16 previous, uint16 subject);
    error EpochAlreadyFinalized(uint64 epoch);
    error EpochOutOfOrder(uint64 epoch, uint64 nextEpoch);
    error EpochNotClosed(uint64 epoch, uint256 membersPast, uint256 activeMembers);
    error ReportsMissing(uint64 epoch, uint256 reported, uint256 activeMembers);
    error EpochNotStalled(uint64 epoch, uint256 closableAt);
    error ReportsMismatch(uint64 epoch, bytes32 stored, bytes32 supplied);
    error BadMiddles(uint256 length, uint256 expected);
    error MiddlesMismatch(uint16 member, int64 low, int64 high);
    error ZeroAmount();
    error NothingToWithdraw(address member);
    error TransferFailed(address to, uint256 amount);
    error Reentrancy();
    error BadX25519Key(bytes32 key);
    error AlreadyEvaluated(address member, bytes32 digest);

    event AdminChanged(address indexed account, bool isAdmin, address indexed by);
    event MemberRegistered(
        address indexed member, uint16 indexed index, string peerId, string name, address indexed by
    );
    event MemberDeactivated(address indexed member, uint16 indexed index, address indexed by);
    event MaxMembersChanged(uint16 maxMembers, address indexed by);
    event ModelCommitted(
        uint64 indexed round, address indexed member, bytes32 digest, uint64 samples
    );
    /// A batch: `commitments` is the batch as sent (48-byte records, see the header), in any
    /// round order; `firstRound` / `lastRound` are its smallest and largest round, indexed so
    /// that an auditor can select batches by round with a topic filter.
    event ModelsCommitted(
        address indexed member,
        uint64 indexed firstRound,
        uint64 indexed lastRound,
        bytes commitments
    );
    event ScoresReported(uint64 indexed epoch, address indexed reporter, bytes entries);
    /// A report of an epoch already finalized (see the header): logged, not combined.
    event ScoresReportedLate(uint64 indexed epoch, address indexed reporter, bytes entries);
    event ScoreCombined(
        uint64 indexed epoch, address indexed member, int64 score, uint32 reports
    );
    event RewardAccrued(uint64 indexed epoch, address indexed member, uint256 amount);
    event EpochFinalized(
        uint64 indexed epoch, address indexed by, uint256 reward, uint256 allocated, bytes32 resultsHash
    );
    /// An admin closed a stalled epoch (see the header): no scores, no reward.
    event EpochClosedByAdmin(uint64 indexed epoch, address indexed by);
    event PoolFunded(address indexed from, uint256 amount);
    event RewardPerEpochChanged(uint256 amount, address indexed by);
    event RewardWithdrawn(address indexed member, uint256 amount);
    /// A member's X25519 public key; zero when registering the member under a new peer ID
    /// cleared it (the new node must set its own).
    event X25519KeySet(address indexed member, bytes32 key);
    event MaxEpsilonChanged(uint64 maxEpsilon, address indexed by);
    /// The reporter's cumulative privacy spend for the run, with its report of `epoch`.
    event PrivacySpent(uint64 indexed epoch, address indexed member, uint64 epsilon, uint64 delta);
    /// The sha256 of the member's row of a cross-site evaluation (see the header).
    event EvaluationCommitted(address indexed member, bytes32 digest);

    modifier onlyAdmin() {
        if (!isAdmin[msg.sender]) revert NotAdmin(msg.sender);
        _;
    }

    modifier nonReentrant() {
        if (_state.locked) revert Reentrancy();
        _state.locked = true;
        _;
        _state.locked = false;
    }

    constructor(
        address[] memory admins,
        uint16 maxMembers_,
        uint64 roundsPerEpoch_,
        uint16 minReports_,
        uint64 graceRounds_,
        uint128 rewardPerEpoch_,
        uint64 closeTimeout_
    ) {
        if (admins.length == 0) revert InvalidConfig("admins", 0);
        if (maxMembers_ == 0 || maxMembers_ > MAX_MEMBERS_LIMIT) {
            revert InvalidConfig("maxMembers", maxMembers_);
        }
        if (roundsPerEpoch_ == 0) revert InvalidConfig("roundsPerEpoch", 0);
        if (minReports_ == 0) revert InvalidConfig("minReports", 0);
        roundsPerEpoch = roundsPerEpoch_;
        graceRounds = graceRounds_;
        minReports = minReports_;
        deployedAt = uint64(block.number);
        closeTimeout = closeTimeout_;
        epochOpenedAt = uint64(block.timestamp);
        _state.maxMembers = maxMembers_;
        _state.rewardPerEpoch = rewardPerEpoch_;
        emit MaxMembersChanged(maxMembers_, msg.sender);
        emit RewardPerEpochChanged(rewardPerEpoch_, msg.sender);
        for (uint256 i; i < admins.length; ++i) {
            if (!isAdmin[admins[i]]) {
                isAdmin[admins[i]] = true;
                _state.adminCount += 1;
                emit AdminChanged(admins[i], true, msg.sender);
            }
        }
    }

    // ----- administration -----------------------------------------------------------------

    function setAdmin(address account, bool enabled) external onlyAdmin {
        if (isAdmin[account] == enabled) return;
        if (!enabled && _state.adminCount == 1) revert LastAdmin(account);
        isAdmin[account] = enabled;
        if (enabled) _state.adminCount += 1;
        else _state.adminCount -= 1;
        emit AdminChanged(account, enabled, msg.sender);
    }

    function setMaxMembers(uint16 maxMembers_) external onlyAdmin {
        if (maxMembers_ < _state.memberCount || maxMembers_ > MAX_MEMBERS_LIMIT) {
            revert InvalidConfig("maxMembers", maxMembers_);
        }
        _state.maxMembers = maxMembers_;
        emit MaxMembersChanged(maxMembers_, msg.sender);
    }

    function setRewardPerEpoch(uint128 amount) external onlyAdmin {
        _state.rewardPerEpoch = amount;
        emit RewardPerEpochChanged(amount, msg.sender);
    }

    /// The consortium's privacy budget per member for a run, in micro-epsilon; 0: none.
    function setMaxEpsilon(uint64 maxEpsilon) external onlyAdmin {
        _maxEpsilon = maxEpsilon;
        emit MaxEpsilonChanged(maxEpsilon, msg.sender);
    }

    /// Register a hospital, or reactivate a deactivated one (it keeps its index and balances).
    function register(address member, string calldata peerId, string calldata name)
        external
        onlyAdmin
    {
        uint256 len = bytes(peerId).length;
        if (len == 0 || len > 128) revert BadPeerId(peerId);
        bytes32 key = keccak256(bytes(peerId));
        address holder = _byPeerId[key];
        if (holder != address(0) && holder != member) revert PeerIdTaken(peerId, holder);
        Member storage m = _members[member];
        if (m.active) revert AlreadyMember(member);
        if (!m.known) {
            State memory s = _state;
            if (s.memberCount >= s.maxMembers) revert MemberCapReached(s.maxMembers);
            m.known = true;
            m.index = s.memberCount;
            memberAt[s.memberCount] = member;
            _state.memberCount = s.memberCount + 1;
        } else {
            bytes32 previousPeer = keccak256(bytes(_peerIdOf[member]));
            delete _byPeerId[previousPeer];
            // A new peer ID is a new node: the old node's masking key is not its key.
            if (previousPeer != key && _x25519Key[member] != 0) {
                delete _x25519Key[member];
                emit X25519KeySet(member, 0);
            }
        }
        m.active = true;
        _peerIdOf[member] = peerId;
        _byPeerId[key] = member;
        emit MemberRegistered(member, m.index, peerId, name, msg.sender);
    }

    /// An active member sets (or rotates) its own X25519 public key.
    function setX25519Key(bytes32 key) external {
        _activeMember(msg.sender);
        if (key == 0) revert BadX25519Key(key);
        _x25519Key[msg.sender] = key;
        emit X25519KeySet(msg.sender, key);
    }

    function deactivate(address member) external onlyAdmin {
        Member storage m = _members[member];
        if (!m.active) revert MemberInactive(member);
        m.active = false;
        emit MemberDeactivated(member, m.index, msg.sender);
    }

    // ----- commitments ----------------------------------------------------------------------

    function commit(uint64 round, bytes32 digest, uint64 samples) external {
        Member memory m = _activeMember(msg.sender);
        _checkRound(round);
        mapping(uint256 => uint256) storage words = _committed[msg.sender];
        uint256 bit = 1 << (round & 0xff);
        uint256 bits = words[round >> 8];
        if (bits & bit != 0) revert AlreadyCommitted(msg.sender, round);
        words[round >> 8] = bits | bit;
        if (round >= m.nextRound) _members[msg.sender].nextRound = round + 1;
        emit ModelCommitted(round, msg.sender, digest, samples);
    }

    /// Several commitments in one transaction (an outbox catching up, or committing once per
    /// epoch): bitmap words are written once per word, the member slot once per batch, and
    /// one event logs the whole batch. `items`: 48-byte records (see the header).
    function commitBatch(bytes calldata items) external {
        Member memory m = _activeMember(msg.sender);
        uint64 next = _commitMany(m, items);
        if (next != m.nextRound) _members[msg.sender].nextRound = next;
    }

    /// `entries` may be empty: a member whose neighbours never arrived still reports its
    /// privacy spend (`epsilon`, `delta`: see the header).
    function report(uint64 epoch, bytes calldata entries, uint64 epsilon, uint64 delta)
        external
    {
        Member memory m = _activeMember(msg.sender);
        _report(m, epoch, entries);
        emit PrivacySpent(epoch, msg.sender, epsilon, delta);
        _members[msg.sender].nextEpoch = epoch + 1;
    }

    /// An epoch's commitments and its report in one transaction: the cheapest way to write,
    /// one transaction per member per epoch.
    function commitAndReport(
        bytes calldata items,
        uint64 epoch,
        bytes calldata entries,
        uint64 epsilon,
        uint64 delta
    ) external {
        Member memory m = _activeMember(msg.sender);
        uint64 next = _commitMany(m, items);
        _report(m, epoch, entries);
        emit PrivacySpent(epoch, msg.sender, epsilon, delta);
        m.nextRound = next;
        m.nextEpoch = epoch + 1;
        _members[msg.sender] = m; // one write of the member's slot
    }

    /// Close an epoch: `reports` are the epoch's ScoresReported events in log order (checked
    /// against the stored hash). Callable by anyone once more than half of the active members
    /// have committed round (epoch + 1) * roundsPerEpoch + graceRounds or later, and every
    /// active member has reported the epoch or most reached the window's end (see the header).
    /// `middles`: for each member index i, middles[2i] and middles[2i + 1] are the two middle
    /// values of the scores about it from active reporters (sorted off chain; equal for an odd
    /// count; any value for a member that gets no score). The contract checks them in one pass
    /// instead of sorting (see _checkedMedian): an insertion sort was 2/3 of the gas.
    function finalize(uint64 epoch, Report[] calldata reports, int64[] calldata middles)
        external
    {
        _finalize(epoch, reports, middles, true);
    }

    /// finalize without waiting for the reports still missing: an admin's decision that they
    /// are not coming (the epoch must still be closed).
    function adminFinalize(uint64 epoch, Report[] calldata reports, int64[] calldata middles)
        external
        onlyAdmin
    {
        _finalize(epoch, reports, middles, false);
    }

    /// An admin closes the first unfinalized epoch when it stalled: closeTimeout seconds after
    /// it became the first unfinalized one. No scores and no reward; the next epoch opens.
    function closeEpoch(uint64 epoch) external onlyAdmin nonReentrant {
        uint64 next = _state.nextEpoch;
        if (epoch < next) revert EpochAlreadyFinalized(epoch);
        if (epoch > next) revert EpochOutOfOrder(epoch, next);
        uint256 closableAt = uint256(epochOpenedAt) + closeTimeout;
        if (block.timestamp < closableAt) revert EpochNotStalled(epoch, closableAt);
        _state.nextEpoch = epoch + 1;
        epochOpenedAt = uint64(block.timestamp);
        emit EpochClosedByAdmin(epoch, msg.sender);
    }

    /// An active member commits the digest of its cross-site evaluation row; the same digest as
    /// its latest is refused (AlreadyEvaluated), so a retried write lands once.
    function commitEvaluation(bytes32 digest) external {
        _activeMember(msg.sender);
        if (evaluationOf[msg.sender] == digest) revert AlreadyEvaluated(msg.sender, digest);
        evaluationOf[msg.sender] = digest;
        emit EvaluationCommitted(msg.sender, digest);
    }

    // ----- rewards --------------------------------------------------------------------------

    function fund() external payable {
        if (msg.value == 0) revert ZeroAmount();
        emit PoolFunded(msg.sender, msg.value);
    }

    receive() external payable {
        if (msg.value == 0) revert ZeroAmount();
        emit PoolFunded(msg.sender, msg.value);
    }

    /// Pull payment to the member itself; state first, transfer last, and a lock on top.
    function withdraw() external nonReentrant {
        Member storage m = _members[msg.sender];
        if (!m.known) revert NotMember(msg.sender);
        uint256 amount = m.owed;
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        m.owed = 0;
        totalOwed -= amount;
        paidTo[msg.sender] += amount;
        emit RewardWithdrawn(msg.sender, amount);
        (bool ok,) = payable(msg.sender).call{value: amount}("");
        if (!ok) revert TransferFailed(msg.sender, amount);
    }

    // ----- pure rules (public so tests and auditors can check them directly) --------------

    /// Shares proportional to positive scores, rounded down: the sum never exceeds `reward`.
    function splitReward(uint256 reward, int256[] memory scores)
        public
        pure
        returns (uint256[] memory shares)
    {
        shares = new uint256[](scores.length);
        uint256 total;
        for (uint256 i; i < scores.length; ++i) {
            if (scores[i] > 0) total += uint256(scores[i]);
        }
        if (total == 0) return shares;
        for (uint256 i; i < scores.length; ++i) {
            if (scores[i] > 0) shares[i] = reward * uint256(scores[i]) / total;
        }
    }

    /// Median; for an even count the mean of the two middle values, rounded toward zero.
    /// Sorts `values` in place (insertion sort). The rule finalize applies, with the sorting
    /// done off chain (see finalize's `middles`); kept for tests and auditors.
    function median(int256[] memory values) public pure returns (int256) {
        uint256 n = values.length;
        for (uint256 i = 1; i < n; ++i) {
            int256 v = values[i];
            uint256 j = i;
            while (j > 0 && values[j - 1] > v) {
                values[j] = values[j - 1];
                --j;
            }
            values[j] = v;
        }
        if (n % 2 == 1) return values[n / 2];
        return (values[n / 2 - 1] + values[n / 2]) / 2;
    }

    // ----- views ----------------------------------------------------------------------------

    /// Commitments take rounds below this (see the header's round window).
    function roundLimit() public view returns (uint256) {
        return (uint256(_state.nextEpoch) + 2) * roundsPerEpoch + graceRounds;
    }

    function state()
        external
        view
        returns (
            uint16 memberCount,
            uint16 maxMembers,
            uint16 adminCount,
            uint64 nextEpoch,
            uint128 rewardPerEpoch,
            uint256 pool,
            uint64 maxEpsilon
        )
    {
        State memory s = _state;
        return (
            s.memberCount,
            s.maxMembers,
            s.adminCount,
            s.nextEpoch,
            s.rewardPerEpoch,
            address(this).balance - totalOwed,
            _maxEpsilon
        );
    }

    function member(address account) external view returns (MemberView memory) {
        Member memory m = _members[account];
        return MemberView(
            m.known, m.active, m.index, m.nextRound, m.nextEpoch, m.owed, paidTo[account],
            _peerIdOf[account], _x25519Key[account]
        );
    }

    function memberByPeerId(string calldata peerId) external view returns (address) {
        return _byPeerId[keccak256(bytes(peerId))];
    }

    function isActiveMember(address account) external view returns (bool) {
        return _members[account].active;
    }

    function committed(address account, uint64 round) external view returns (bool) {
        return _committed[account][round >> 8] & (1 << (round & 0xff)) != 0;
    }

    /// One 256-round word of a member's commitment bitmap (bit i: round word * 256 + i).
    function committedWord(address account, uint256 word) external view returns (uint256) {
        return _committed[account][word];
    }

    // ----- internals ------------------------------------------------------------------------

    function _activeMember(address account) internal view returns (Member memory m) {
        m = _members[account];
        if (!m.active) {
            if (!m.known) revert NotMember(account);
            revert MemberInactive(account);
        }
    }

    function _finalize(
        uint64 epoch,
        Report[] calldata reports,
        int64[] calldata middles,
        bool waitForReports
    ) internal nonReentrant {
        uint64 next = _state.nextEpoch;
        if (epoch < next) revert EpochAlreadyFinalized(epoch);
        if (epoch > next) revert EpochOutOfOrder(epoch, next);
        _checkReports(epoch, reports);
        (address[] memory addrs, bool[] memory active) = _closedMembers(epoch, waitForReports);
        if (middles.length != 2 * addrs.length) {
            revert BadMiddles(middles.length, 2 * addrs.length);
        }
        int256[] memory scores = new int256[](addrs.length);
        uint256[] memory counts = _combine(reports, active, middles, scores);
        uint256 reward = _state.rewardPerEpoch;
        uint256 pool = address(this).balance - totalOwed;
        if (reward > pool) reward = pool;
        _accrue(epoch, reward, addrs, scores, counts);
    }

    /// Emit every combined score, credit every share, record the epoch's result.
    function _accrue(
        uint64 epoch,
        uint256 reward,
        address[] memory addrs,
        int256[] memory scores,
        uint256[] memory counts
    ) internal {
        uint256[] memory shares = splitReward(reward, scores);
        bytes32 results;
        uint256 allocated;
        for (uint256 i; i < addrs.length; ++i) {
            if (counts[i] == 0) continue; // not scored (inactive or too few reports)
            int64 score = int64(scores[i]);
            emit ScoreCombined(epoch, addrs[i], score, uint32(counts[i]));
            results = keccak256(
                abi.encodePacked(results, addrs[i], score, uint32(counts[i]), uint128(shares[i]))
            );
            if (shares[i] == 0) continue;
            _members[addrs[i]].owed += uint96(shares[i]);
            allocated += shares[i];
            emit RewardAccrued(epoch, addrs[i], shares[i]);
        }
        totalOwed += allocated;
        epochResult[epoch] = EpochResult(results, uint128(reward), uint128(allocated));
        _state.nextEpoch = epoch + 1;
        epochOpenedAt = uint64(block.timestamp);
        emit EpochFinalized(epoch, msg.sender, reward, allocated, results);
    }

    /// The big-endian unsigned integer in `size` (1..32) bytes of `data` at `off`. No bounds
    /// check: callers only read inside records whose whole length they checked.
    function _uintAt(bytes calldata data, uint256 off, uint256 size)
        private
        pure
        returns (uint256 v)
    {
        assembly ("memory-safe") {
            v := shr(sub(256, mul(size, 8)), calldataload(add(data.offset, off)))
        }
    }

    /// For loop counters bounded by a calldata length (cannot overflow).
    function _uncheckedAdd(uint256 a, uint256 b) private pure returns (uint256) {
        unchecked {
            return a + b;
        }
    }

    function _checkRound(uint64 round) internal view {
        uint256 limit = roundLimit();
        if (round >= limit) revert RoundBeyondWindow(round, limit);
    }

    /// Mark `items` (48-byte records) in the bitmap and log them as one event; returns the
    /// member's new nextRound.
    function _commitMany(Member memory m, bytes calldata items) internal returns (uint64 next) {
        uint256 n = items.length;
        if (n == 0) revert EmptyBatch();
        if (n % COMMITMENT_BYTES != 0) revert BadCommitmentEncoding(n);
        mapping(uint256 => uint256) storage words = _committed[msg.sender];
        uint64 first = uint64(_uintAt(items, 0, 8));
        uint64 last = first;
        uint256 word = first >> 8;
        uint256 bits = words[word];
        for (uint256 off; off < n; off = _uncheckedAdd(off, COMMITMENT_BYTES)) {
            uint64 round = uint64(_uintAt(items, off, 8)); // off + 48 <= n: in bounds
            if (round >> 8 != word) {
                words[word] = bits;
                word = round >> 8;
                bits = words[word];
            }
            uint256 bit = 1 << (round & 0xff);
            if (bits & bit != 0) revert AlreadyCommitted(msg.sender, round);
            bits |= bit;
            if (round > last) last = round;
            else if (round < first) first = round;
        }
        words[word] = bits;
        _checkRound(last);
        next = last + 1; // checked: a round of 2**64 - 1 reverts, as in commit
        if (next < m.nextRound) next = m.nextRound;
        emit ModelsCommitted(msg.sender, first, last, items);
    }

    /// Validate `entries` (known subjects, never the reporter, ascending; possibly none) and
    /// chain them into the epoch's reports hash, or only log them if the epoch is finalized
    /// (a late report, see the header). The caller records nextEpoch.
    function _report(Member memory m, uint64 epoch, bytes calldata entries) internal {
        State memory s = _state;
        if (m.nextEpoch > epoch) {
            if (m.nextEpoch == epoch + 1) revert AlreadyReported(msg.sender, epoch);
            revert ReportOutOfOrder(msg.sender, epoch, m.nextEpoch - 1);
        }
        uint256 n = entries.length;
        if (n % ENTRY_BYTES != 0) revert BadReportEncoding(n); // empty: no scores this epoch
        uint256 previous;
        for (uint256 off; off < n; off = _uncheckedAdd(off, ENTRY_BYTES)) {
            uint16 subject = uint16(_uintAt(entries, off, 2)); // off + 10 <= n: in bounds
            if (subject >= s.memberCount) revert UnknownSubject(subject, s.memberCount);
            if (subject == m.index) revert SelfScore(msg.sender, epoch);
            if (off != 0 && subject <= previous) {
                revert SubjectsNotAscending(uint16(previous), subject);
            }
            previous = subject;
        }
        if (epoch < s.nextEpoch) {
            emit ScoresReportedLate(epoch, msg.sender, entries);
            return;
        }
        reportsHash[epoch] = keccak256(abi.encodePacked(reportsHash[epoch], msg.sender, entries));
        emit ScoresReported(epoch, msg.sender, entries);
    }

    function _checkReports(uint64 epoch, Report[] calldata reports) internal view {
        bytes32 h;
        for (uint256 i; i < reports.length; ++i) {
            h = keccak256(abi.encodePacked(h, reports[i].reporter, reports[i].entries));
        }
        bytes32 stored = reportsHash[epoch];
        if (h != stored) revert ReportsMismatch(epoch, stored, h);
    }

    /// Every member's address and active flag, by index; reverts unless the epoch is closed
    /// and, when `waitForReports`, reported by every active member or past its wait (header).
    function _closedMembers(uint64 epoch, bool waitForReports)
        internal
        view
        returns (address[] memory addrs, bool[] memory active)
    {
        addrs = new address[](_state.memberCount);
        active = new bool[](addrs.length);
        uint256 closeRound = (uint256(epoch) + 1) * roundsPerEpoch + graceRounds;
        uint256 windowEnd = closeRound + roundsPerEpoch; // roundLimit() while epoch is next
        uint256 activeCount;
        uint256 past;
        uint256 atEnd;
        uint256 reported;
        for (uint256 i; i < addrs.length; ++i) {
            address a = memberAt[i];
            Member memory m = _members[a];
            addrs[i] = a;
            if (!m.active) continue;
            active[i] = true;
            activeCount += 1;
            if (m.nextRound > closeRound) past += 1;
            if (m.nextRound >= windowEnd) atEnd += 1;
            if (m.nextEpoch > epoch) reported += 1; // reported it, or a later one (never it)
        }
        if (past * 2 <= activeCount) revert EpochNotClosed(epoch, past, activeCount);
        if (waitForReports && reported < activeCount && atEnd * 2 <= activeCount) {
            revert ReportsMissing(epoch, reported, activeCount);
        }
    }

    /// Median score per active subject from the reports of active reporters; `counts[i]` is
    /// the number of reports behind `scores[i]`, or 0 when the subject gets no score.
    function _combine(
        Report[] calldata reports,
        bool[] memory active,
        int64[] calldata middles,
        int256[] memory scores
    ) internal view returns (uint256[] memory counts) {
        uint256 n = active.length;
        counts = new uint256[](n);
        bool[] memory counted = new bool[](reports.length);
        for (uint256 r; r < reports.length; ++r) {
            Member memory rep = _members[reports[r].reporter];
            if (!active[rep.index]) continue; // a deactivated member's reports no longer count
            counted[r] = true;
            bytes calldata e = reports[r].entries;
            for (uint256 off; off < e.length; off += ENTRY_BYTES) {
                counts[uint16(bytes2(e[off:off + 2]))] += 1;
            }
        }
        int256[][] memory buckets = new int256[][](n);
        for (uint256 i; i < n; ++i) {
            buckets[i] = new int256[](counts[i]);
            counts[i] = 0; // reused as the fill pointer
        }
        for (uint256 r; r < reports.length; ++r) {
            if (!counted[r]) continue;
            bytes calldata e = reports[r].entries;
            for (uint256 off; off < e.length; off += ENTRY_BYTES) {
                uint256 subject = uint16(bytes2(e[off:off + 2]));
                buckets[subject][counts[subject]++] = int64(uint64(bytes8(e[off + 2:off + 10])));
            }
        }
        for (uint256 i; i < n; ++i) {
            if (!active[i] || counts[i] < minReports) {
                counts[i] = 0;
                continue;
            }
            scores[i] = _checkedMedian(uint16(i), buckets[i], middles[2 * i], middles[2 * i + 1]);
        }
    }

    /// The median of `values` (as median() computes it) from its two middle values, supplied:
    /// `low` must be the ((n - 1) / 2)-th smallest value and `high` the (n / 2)-th (0-based),
    /// which holds iff fewer than j + 1 values are below it and more than j are at most it.
    /// One pass, O(n), instead of an O(n^2) sort.
    function _checkedMedian(uint16 subject, int256[] memory values, int64 low, int64 high)
        internal
        pure
        returns (int256)
    {
        uint256 n = values.length; // >= minReports >= 1
        uint256 lowBelow;
        uint256 lowAtMost;
        uint256 highBelow;
        uint256 highAtMost;
        for (uint256 k; k < n; ++k) {
            int256 v = values[k];
            if (v < low) ++lowBelow;
            if (v <= low) ++lowAtMost;
            if (v < high) ++highBelow;
            if (v <= high) ++highAtMost;
        }
        uint256 jLow = (n - 1) / 2;
        uint256 jHigh = n / 2;
        if (lowBelow > jLow || lowAtMost <= jLow || highBelow > jHigh || highAtMost <= jHigh) {
            revert MiddlesMismatch(subject, low, high);
        }
        return (int256(low) + int256(high)) / 2;
    }
}
