-- The tables panda-server 1.0.x touches for the task endpoints idds-vis uses, and no more.
--
-- Written for the tests from what panda-server's own SQL reads and writes (not a copy of the
-- panda-database schema, which is not on PyPI). The server rewrites its hard-coded ATLAS_PANDA /
-- ATLAS_PANDAMETA schema names to the configured ones, so one schema holds everything; the
-- fixture runs this file with search_path set to that schema. Names are lower case and unquoted
-- (panda-server's SQL is unquoted, so PostgreSQL folds it to lower case). Types matter little,
-- except that task parameters are stored as text: the server json.loads() what it reads back.

-- Per-component settings the server reads (getConfigValue). Empty is fine; missing is not.
CREATE TABLE config (
    app text, component text, key text, vo text, value text, type text, value_json text
);

-- Submission (task/submit) writes the task here; task/get_task_parameters reads it back.
CREATE SEQUENCE prodsys2_task_id_seq;  -- its nextval is the new jediTaskID
CREATE TABLE t_task (
    taskid bigint PRIMARY KEY,
    parent_tid bigint,
    status text,
    submit_time timestamp,
    vo text,
    prodsourcelabel text,
    username text,
    taskname text,
    priority bigint,
    current_priority bigint,
    jedi_task_parameters text
);

-- Commands for a resubmitted task (incremental execution); checked on every submission.
CREATE TABLE prodsys_comm (
    comm_task bigint, comm_owner text, comm_cmd text, comm_parameters text
);

-- What JEDI writes once it has taken the task: the rows finish_task() inserts.
-- Every JediTaskSpec attribute is a column: task/get_tasks_detailed_info_since selects them all.
CREATE TABLE jedi_tasks (
    jeditaskid bigint PRIMARY KEY,
    taskname text,
    status text,
    username text,
    creationdate timestamp,
    modificationtime timestamp,
    starttime timestamp,
    endtime timestamp,
    frozentime timestamp,
    prodsourcelabel text,
    workinggroup text,
    vo text,
    corecount bigint,
    tasktype text,
    processingtype text,
    taskpriority bigint,
    currentpriority bigint,
    architecture text,
    transuses text,
    transhome text,
    transpath text,
    lockedby text,
    lockedtime timestamp,
    termcondition text,
    splitrule text,
    walltime bigint,
    walltimeunit text,
    outdiskcount bigint,
    outdiskunit text,
    workdiskcount bigint,
    workdiskunit text,
    ramcount bigint,
    ramunit text,
    iointensity bigint,
    iointensityunit text,
    workqueue_id bigint,
    progress bigint,
    failurerate bigint,
    errordialog text,
    reqid bigint,
    oldstatus text,
    cloud text,
    site text,
    countrygroup text,
    parent_tid bigint,
    eventservice bigint,
    ticketid text,
    ticketsystemtype text,
    statechangetime timestamp,
    superstatus text,
    campaign text,
    mergeramcount bigint,
    mergeramunit text,
    mergewalltime bigint,
    mergewalltimeunit text,
    throttledtime bigint,
    numthrottled bigint,
    mergecorecount bigint,
    goal bigint,
    assessmenttime timestamp,
    cputime bigint,
    cputimeunit text,
    cpuefficiency bigint,
    basewalltime bigint,
    nucleus text,
    baseramcount bigint,
    ttcrequested timestamp,
    ttcpredicted timestamp,
    ttcpredictiondate timestamp,
    rescuetime timestamp,
    requesttype text,
    gshare text,
    resource_type text,
    usejumbo text,
    diskio bigint,
    diskiounit text,
    memory_leak_core bigint,
    memory_leak_x2 bigint,
    attemptnr bigint,
    container_name text,
    framework text,
    activatedtime timestamp,
    queuedtime timestamp,
    actiontime timestamp
);

CREATE TABLE jedi_taskparams (
    jeditaskid bigint PRIMARY KEY,
    taskparams text
);

-- The file counters are summed and subtracted for input datasets: NOT NULL there.
CREATE TABLE jedi_datasets (
    jeditaskid bigint NOT NULL,
    datasetid bigint NOT NULL,
    datasetname text,
    containername text,
    type text,
    status text,
    masterid bigint,
    nfiles bigint DEFAULT 0,
    nfilestobeused bigint DEFAULT 0,
    nfilesused bigint DEFAULT 0,
    nfilesfinished bigint DEFAULT 0,
    nfilesfailed bigint DEFAULT 0,
    nfilesonhold bigint DEFAULT 0,
    nfilesmissing bigint DEFAULT 0,
    PRIMARY KEY (jeditaskid, datasetid)
);

CREATE TABLE jedi_dataset_contents (
    jeditaskid bigint NOT NULL,
    datasetid bigint NOT NULL,
    fileid bigint NOT NULL,
    lfn text,
    scope text,
    status text,
    proc_status text,
    pandaid bigint,
    PRIMARY KEY (jeditaskid, datasetid, fileid)
);

-- Active jobs: task/get_details reads it even for a finished task (then it is empty).
CREATE TABLE jobsactive4 (
    pandaid bigint PRIMARY KEY,
    jeditaskid bigint,
    prodsourcelabel text,
    jobstatus text,
    processingtype text
);

-- Users (the server reads the banned ones at start and every 10 minutes).
CREATE SEQUENCE users_id_seq;
CREATE TABLE users (
    id bigint PRIMARY KEY DEFAULT nextval('users_id_seq'),
    name text,
    dn text,
    email text,
    status text
);
